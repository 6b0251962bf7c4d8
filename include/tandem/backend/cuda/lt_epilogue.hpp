// SPDX-License-Identifier: Apache-2.0
// cuBLASLt's epilogues as cuda::Lt uses them: their names, which operands each reads or writes,
// and the layout of the ReLU bit mask some of them keep.
#pragma once

#include <cstddef>

#include <cublasLt.h>

namespace tandem::backend::cuda {

// The room a ReLU mask takes (op::LinearForward::relu_mask): one bit an element, each row of
// `width` padded to a multiple of 128 bits, as the ReLU bit-mask epilogues lay it out.
constexpr std::size_t relu_mask_bytes(std::size_t rows, std::size_t width) { return rows * ((width + 127) / 128) * 16; }

inline const char *epilogue_name(cublasLtEpilogue_t e) {
  switch (e) {
  case CUBLASLT_EPILOGUE_DEFAULT: return "DEFAULT";
  case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
  case CUBLASLT_EPILOGUE_RELU: return "RELU";
  case CUBLASLT_EPILOGUE_RELU_BIAS: return "RELU_BIAS";
  case CUBLASLT_EPILOGUE_RELU_AUX: return "RELU_AUX";
  case CUBLASLT_EPILOGUE_RELU_AUX_BIAS: return "RELU_AUX_BIAS";
  case CUBLASLT_EPILOGUE_GELU: return "GELU";
  case CUBLASLT_EPILOGUE_GELU_BIAS: return "GELU_BIAS";
  case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
  case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
  case CUBLASLT_EPILOGUE_DRELU: return "DRELU";
  case CUBLASLT_EPILOGUE_DRELU_BGRAD: return "DRELU_BGRAD";
  case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
  default: return "other";
  }
}
inline bool uses_bias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_BIAS || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
         e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_BGRADB ||
         e == CUBLASLT_EPILOGUE_DRELU_BGRAD;
}
// The aux is a ReLU's bit mask.
inline bool uses_mask(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_RELU_AUX || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DRELU ||
         e == CUBLASLT_EPILOGUE_DRELU_BGRAD;
}
// The aux is a mask, or the GELU's input (floats laid out as D).
inline bool uses_aux(cublasLtEpilogue_t e) {
  return uses_mask(e) || e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

} // namespace tandem::backend::cuda
