# SPDX-License-Identifier: Apache-2.0
# Test registration for the top-level build. Everything here is discovered from the tree's layout,
# so adding a test, example or header needs no CMake edit:
#   tests/unit/*.cpp            -> tandem_tests (doctest; TEST_SUITE names become CTest labels)
#   tests/cuda/*.cu             -> tandem_cuda_tests (TEST_SUITE("gpu"), label gpu; tests/cuda/CMakeLists.txt)
#   tests/compile_fail/*.cpp    -> compile_fail.<name>.<compiler>, compile_fail.twins.<compiler> (label compile_fail)
#   include/tandem/**/*.hpp     -> tandem_header_check[_cuda], built by tests header_check.gxx/.nvcc
#   examples/NN_name/main.cpp   -> example_NN_name, test example.NN_name (label example)
#   examples/NN_name/main.cu    -> example_NN_name_cuda, test example.NN_name.cuda (labels example;gpu)
#   tests/package/              -> package.* (find_package and add_subdirectory consumers)
#   README.md, docs/*.md        -> readme.example (the first ```cpp block), docs.links (label lint)
#   tests/mpi/*.cpp             -> tandem_mpi_tests, run by mpiexec on 1..4 ranks (label mpi)
#   examples/NN_distributed/    -> example.NN_distributed, run by mpiexec on 2 ranks (labels mpi;example)
include_guard(GLOBAL)

set(_tandem_compile_check ${CMAKE_CURRENT_LIST_DIR}/compile_check.cmake)
# Tests compile as strict ISO C++20 (-std=c++20, not gnu++20), as a portable consumer would.
set(CMAKE_CXX_EXTENSIONS OFF)

# Warnings for our own targets only; consumers of tandem::tandem choose their own.
# TANDEM_WARNINGS_AS_ERRORS (on in CI, scripts/configure.sh): a warning in our own code fails the build.
option(TANDEM_WARNINGS_AS_ERRORS "Compile tandem's tests and examples with -Werror" OFF)
function(_tandem_test_target target)
  target_link_libraries(${target} PRIVATE tandem::tandem)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
                                           $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
  if(TANDEM_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>
                                             $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror --Werror=all-warnings>)
  endif()
endfunction()

# Test programs check results, not speed: in optimised builds their C++ files compile at
# TANDEM_TEST_OPTIMIZATION (-O1 takes about a third less time than -O3; the results are the same
# IEEE operations, as no -ffast-math is ever used). tandem::compiled, the examples and the
# benchmarks keep the build type's flags. Empty: the tests keep them too. Debug builds are left alone.
set(TANDEM_TEST_OPTIMIZATION -O1 CACHE STRING "Optimisation flag for test programs in optimised builds (empty: the build type's)")
# nvcc warns of a second -O, so a folder of CUDA test programs lowers its own CUDA flags instead
# (the host compiler's optimisation; device code is optimised as before). A macro: it sets the
# calling folder's variables.
macro(_tandem_test_cuda_optimization)
  if(TANDEM_TEST_OPTIMIZATION)
    foreach(config IN ITEMS RELEASE RELWITHDEBINFO MINSIZEREL)
      string(REGEX REPLACE "(^| )-O[0-9s]( |$)" "\\1${TANDEM_TEST_OPTIMIZATION}\\2" CMAKE_CUDA_FLAGS_${config}
                           "${CMAKE_CUDA_FLAGS_${config}}")
    endforeach()
  endif()
endmacro()
function(_tandem_test_program target)
  _tandem_test_target(${target})
  if(TANDEM_TEST_OPTIMIZATION)
    # C++ only: the last -O wins there, while nvcc warns of a second -O (its .cu files keep theirs).
    target_compile_options(${target} PRIVATE $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<NOT:$<CONFIG:Debug>>>:${TANDEM_TEST_OPTIMIZATION}>)
  endif()
endfunction()

function(tandem_add_unit_tests)
  set(unit ${PROJECT_SOURCE_DIR}/tests/unit)
  file(GLOB sources CONFIGURE_DEPENDS ${unit}/*.cpp)
  if(NOT TARGET tandem::checkpoint)
    list(FILTER sources EXCLUDE REGEX "/checkpoint[^/]*\\.cpp$") # they need nlohmann-json
  endif()
  if(NOT sources)
    return()
  endif()
  find_package(doctest REQUIRED)
  include(doctest) # doctest_discover_tests
  add_executable(tandem_tests ${sources})
  _tandem_test_program(tandem_tests)
  # The host kernels come compiled once from tandem::compiled, not again in every test file; the
  # examples, the reference tests and the header checks build header-only.
  target_link_libraries(tandem_tests PRIVATE doctest::doctest tandem::compiled $<TARGET_NAME_IF_EXISTS:tandem::checkpoint>)
  # glibc fills every block malloc hands out with this byte (MALLOC_PERTURB_), so host memory read
  # before it is written gives garbage in the tests rather than the zeros a fresh page happens to
  # hold (a status word left uninitialised, a gradient never zeroed).
  set(perturb MALLOC_PERTURB_=165)
  # ADD_LABELS: a test case's TEST_SUITE becomes its CTest label (so `-LE gpu` works).
  doctest_discover_tests(tandem_tests ADD_LABELS 1 PROPERTIES ENVIRONMENT ${perturb})
  # HostExecution::automatic runs the tests' small networks on the calling thread: the whole suite
  # runs once more with every stage on its worker thread, so both paths stay covered.
  add_test(NAME unit.workers COMMAND tandem_tests)
  set_tests_properties(unit.workers PROPERTIES ENVIRONMENT "TANDEM_HOST_EXECUTION=workers;${perturb}" LABELS unit)

  # GPU tests: .cu files linked with the same doctest main, built in their own folder (whose
  # CUDA flags _tandem_test_cuda_optimization lowers).
  file(GLOB cu_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda/*.cu)
  if(TANDEM_CUDA AND cu_sources AND EXISTS ${unit}/main.cpp)
    add_subdirectory(${PROJECT_SOURCE_DIR}/tests/cuda ${PROJECT_BINARY_DIR}/tests/cuda)
  endif()
endfunction()

# Compile-fail tests, CCCL/Eigen style. tests/compile_fail/<name>.cpp starts with the line
#   // expect: <CMake regex>          (optionally `// expect-nvcc: ...` etc. to override per compiler)
# and wraps the offending code in #ifdef TANDEM_COMPILE_FAIL. Per compiler:
#   compile_fail.<name>.<cc>       -DTANDEM_COMPILE_FAIL: must fail AND the diagnostic must match
#                                  (one compile per case: each diagnostic is checked on its own;
#                                  under nvcc only for cases with an `// expect-nvcc:` line);
#   compile_fail.twins.<cc>        every case without the define, in one generated translation unit
#                                  (each case in a namespace of its own): must compile, so a typo
#                                  cannot pass as the expected failure. One compile for all twins.
# A case whose code cannot sit inside a namespace (it specialises a tandem or std template, say)
# says `// twin: alone` in its first 8 lines and gets compile_fail.<name>.<cc>.twin instead.
# <cc> is gxx (or clang, if that is the C++ compiler), plus clang when clang++ is also installed,
# plus nvcc when CUDA is enabled. Only the front end runs.
function(tandem_add_compile_fail_tests)
  file(GLOB cases CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/compile_fail/*.cpp)
  if(NOT TARGET tandem::checkpoint)
    list(FILTER cases EXCLUDE REGEX "/checkpoint[^/]*\\.cpp$") # they need nlohmann-json
  endif()
  if(NOT cases)
    return()
  endif()

  # Compilers and flags go to one file that compile_check.cmake includes: short test command lines.
  get_target_property(eigen_includes Eigen3::Eigen INTERFACE_INCLUDE_DIRECTORIES)
  set(includes -I${PROJECT_SOURCE_DIR}/include)
  foreach(dir IN LISTS eigen_includes)
    list(APPEND includes -isystem ${dir})
  endforeach()
  set(common -std=c++20 ${includes})
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    set(compilers clang)
    set(clang_command ${CMAKE_CXX_COMPILER})
  else()
    set(compilers gxx)
    set(gxx_command ${CMAKE_CXX_COMPILER})
    # The design promises readable shape errors on clang too: check them where clang++ exists.
    option(TANDEM_COMPILE_FAIL_CLANG "Also run the compile-fail tests with clang++ if installed" ON)
    find_program(TANDEM_CLANGXX NAMES clang++ DOC "clang++ for the .clang compile-fail tests")
    if(TANDEM_COMPILE_FAIL_CLANG AND TANDEM_CLANGXX)
      list(APPEND compilers clang)
      set(clang_command ${TANDEM_CLANGXX})
    endif()
  endif()
  set(gxx_flags ${common} -fsyntax-only -fdiagnostics-color=never -fmessage-length=0)
  set(clang_flags ${common} -fsyntax-only -fno-color-diagnostics)
  if(TANDEM_CUDA)
    list(APPEND compilers nvcc)
    set(nvcc_command ${CMAKE_CUDA_COMPILER})
    if(CMAKE_CUDA_HOST_COMPILER)
      list(APPEND nvcc_command -ccbin ${CMAKE_CUDA_HOST_COMPILER})
    endif()
    # Front ends only: --cuda stops after nvcc's own front end has checked host and device code
    # (the host compiler never runs: the .gxx tests cover it), and device code stops after syntax.
    # That halves the cost of a twin. 20012: Eigen's defaulted __host__ __device__ members, noise.
    set(nvcc_flags -x cu ${common} --expt-relaxed-constexpr --extended-lambda -diag-suppress=20012
                   --cuda -fdevice-syntax-only -o /dev/null)
    list(GET CMAKE_CUDA_ARCHITECTURES 0 arch)
    if(arch MATCHES "^([0-9]+)")
      list(APPEND nvcc_flags -arch=sm_${CMAKE_MATCH_1})
    endif()
  endif()
  set(config "")
  foreach(cc IN LISTS compilers)
    string(APPEND config "set(${cc}_command [==[${${cc}_command}]==])\nset(${cc}_flags [==[${${cc}_flags}]==])\n")
  endforeach()
  set(config_file ${PROJECT_BINARY_DIR}/compile_check_config.cmake)
  file(CONFIGURE OUTPUT ${config_file} CONTENT "${config}")

  # The twins' translation unit: the cases' own includes first, at global scope, so that inside
  # each case's namespace they are already-included no-ops (include guards, #pragma once).
  set(includes "")
  set(bodies "")
  set(alone "")
  # Editing a case's includes reconfigures, which regenerates the list.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${cases})
  foreach(source IN LISTS cases)
    get_filename_component(name ${source} NAME_WE)
    # Fail at configure time, not in every test, when the expectation line is missing.
    file(STRINGS ${source} head LIMIT_COUNT 8)
    if(NOT head MATCHES "// expect: ")
      message(FATAL_ERROR "${source}: the first line must be `// expect: <regex>`")
    endif()
    foreach(cc IN LISTS compilers)
      # nvcc's front end reports a static_assert as g++ does, and twins.nvcc compiles every case:
      # a case of its own under nvcc only where its diagnostic reads differently there (an
      # `// expect-nvcc:` line), which is what that run checks.
      if(cc STREQUAL "nvcc" AND NOT head MATCHES "// expect-nvcc: ")
        continue()
      endif()
      set(test compile_fail.${name}.${cc})
      add_test(NAME ${test} COMMAND ${CMAKE_COMMAND} -DCONFIG=${config_file} -DCOMPILER=${cc} -DMODE=fail
                                    -DSOURCE=${source} -P ${_tandem_compile_check})
      set_tests_properties(${test} PROPERTIES LABELS compile_fail)
    endforeach()
    if(head MATCHES "// twin: alone")
      list(APPEND alone ${source})
      continue()
    endif()
    file(STRINGS ${source} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    list(APPEND includes ${lines})
    string(MAKE_C_IDENTIFIER ${name} id)
    string(APPEND bodies "namespace tandem_twin_${id} {\n#include \"${source}\"\n}\n")
  endforeach()
  list(REMOVE_DUPLICATES includes)
  list(JOIN includes "\n" includes)

  set(twins "")
  if(NOT bodies STREQUAL "")
    set(twins ${PROJECT_BINARY_DIR}/compile_fail/twins.cpp)
    file(CONFIGURE OUTPUT ${twins} @ONLY
         CONTENT "// Generated: every tests/compile_fail case without TANDEM_COMPILE_FAIL, each in a namespace.\n${includes}\n${bodies}")
  endif()
  foreach(cc IN LISTS compilers)
    foreach(source IN LISTS twins alone)
      if(source STREQUAL twins)
        set(test compile_fail.twins.${cc})
      else()
        get_filename_component(name ${source} NAME_WE)
        set(test compile_fail.${name}.${cc}.twin)
      endif()
      # -I: a case's "quoted" includes resolve from its own folder in the generated file too.
      add_test(NAME ${test}
               COMMAND ${CMAKE_COMMAND} -DCONFIG=${config_file} -DCOMPILER=${cc} -DMODE=twin -DSOURCE=${source}
                       -DQUOTE_DIR=${PROJECT_SOURCE_DIR}/tests/compile_fail -P ${_tandem_compile_check})
      set_tests_properties(${test} PROPERTIES LABELS compile_fail)
    endforeach()
  endforeach()
endfunction()

# Every public header must compile on its own (CUTLASS/CCCL style): one generated TU per header,
# including it twice to also check the include guard. backend/cuda/ headers (and any .cuh) need nvcc
# and are checked only as .cu; the umbrella header and checkpoint.hpp are checked both ways, since
# the same program must build with g++ (host backend) and with nvcc. The object libraries stay out of ALL and are
# built by the tests header_check.gxx / header_check.nvcc (label header): a header that does not
# compile fails one test instead of stopping the whole build and every other test with it.
function(tandem_add_header_checks)
  set(root ${PROJECT_SOURCE_DIR}/include)
  file(GLOB_RECURSE headers CONFIGURE_DEPENDS RELATIVE ${root} ${root}/tandem/*.hpp ${root}/tandem/*.cuh)
  if(NOT TARGET tandem::checkpoint)
    list(FILTER headers EXCLUDE REGEX "^tandem/checkpoint") # they need nlohmann-json
  endif()
  set(gxx_sources "")
  set(nvcc_sources "")
  foreach(header IN LISTS headers)
    string(MAKE_C_IDENTIFIER ${header} id)
    set(kinds gxx)
    if(header MATCHES "^tandem/distributed" AND NOT TARGET tandem::distributed)
      continue() # needs MPI
    endif()
    if(header MATCHES "^tandem/backend/cuda/" OR header MATCHES "\\.cuh$")
      set(kinds nvcc)
    elseif(header STREQUAL "tandem/tandem.hpp" OR header STREQUAL "tandem/checkpoint.hpp")
      set(kinds gxx nvcc) # what every program includes, and the checkpoints nvcc once failed on
    endif()
    foreach(kind IN LISTS kinds)
      set(tu ${PROJECT_BINARY_DIR}/header_check/${id}.cpp)
      if(kind STREQUAL "nvcc")
        if(NOT TANDEM_CUDA)
          continue()
        endif()
        set(tu ${PROJECT_BINARY_DIR}/header_check/${id}.cu)
      endif()
      # file(CONFIGURE) rewrites only on change, so reconfiguring recompiles nothing.
      file(CONFIGURE OUTPUT ${tu} CONTENT "// Generated: <${header}> must compile on its own.\n#include <${header}>\n#include <${header}>\n")
      list(APPEND ${kind}_sources ${tu})
    endforeach()
  endforeach()

  cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
  foreach(kind IN ITEMS gxx nvcc)
    if(NOT ${kind}_sources)
      continue()
    endif()
    set(target tandem_header_check)
    if(kind STREQUAL "nvcc")
      set(target tandem_header_check_cuda)
    endif()
    add_library(${target} OBJECT EXCLUDE_FROM_ALL ${${kind}_sources})
    _tandem_test_program(${target})
    # In the view of a program linked with tandem::compiled (the kernels declared, their bodies and
    # Eigen not parsed): about a third less work per header. kernels_eigen.hpp, the one header
    # that view leaves out, has its own file here like every other.
    target_compile_definitions(${target} PRIVATE TANDEM_COMPILED)
    if(kind STREQUAL "nvcc")
      # nvcc's front ends only (host and device, as the compile-fail tests run them): a header that
      # is not self-contained fails there, and the host compiler's pass over the CUDA headers is
      # in every CUDA test program's build. About half the time; the "objects" are never linked.
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--cuda -fdevice-syntax-only>)
    endif()
    target_link_libraries(${target} PRIVATE $<TARGET_NAME_IF_EXISTS:tandem::checkpoint>)
    if(TARGET tandem::distributed)
      target_link_libraries(${target} PRIVATE tandem::distributed)
    endif()
    add_test(NAME header_check.${kind}
             COMMAND ${CMAKE_COMMAND} --build ${PROJECT_BINARY_DIR} --config $<CONFIG> --target ${target} --parallel ${jobs})
    # Two builds at once in one build tree would trip over each other's lock and log files.
    set_tests_properties(header_check.${kind} PROPERTIES LABELS header RESOURCE_LOCK tandem_build_tree)
  endforeach()
endfunction()

# Examples are tests (Hana style): examples/NN_name/main.cpp is built and run; exit code 0 passes.
# An example with dependencies of its own has a CMakeLists.txt that adds it (or says why not).
function(tandem_add_examples)
  file(GLOB dirs LIST_DIRECTORIES true CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/examples/*)
  foreach(dir IN LISTS dirs)
    get_filename_component(name ${dir} NAME)
    if(NOT IS_DIRECTORY ${dir} OR NOT name MATCHES "^[0-9][0-9]_" OR name MATCHES "_distributed$")
      continue() # (distributed examples run under mpiexec: tandem_add_mpi_tests)
    endif()
    if(EXISTS ${dir}/CMakeLists.txt)
      add_subdirectory(${dir} ${PROJECT_BINARY_DIR}/examples/${name})
      continue()
    endif()
    if(EXISTS ${dir}/main.cpp)
      add_executable(example_${name} ${dir}/main.cpp)
      _tandem_test_target(example_${name})
      # Kernels compiled once (tandem::compiled, at the build type's flags), not again in every
      # example; header-only builds are covered by the reference tests, readme.example, the
      # package consumers and the builds without CMake.
      target_link_libraries(example_${name} PRIVATE tandem::compiled)
      add_test(NAME example.${name} COMMAND example_${name})
      set_tests_properties(example.${name} PROPERTIES LABELS example)
    endif()
    if(TANDEM_CUDA AND EXISTS ${dir}/main.cu)
      add_executable(example_${name}_cuda ${dir}/main.cu)
      _tandem_test_target(example_${name}_cuda)
      add_test(NAME example.${name}.cuda COMMAND example_${name}_cuda)
      set_tests_properties(example.${name}.cuda PROPERTIES LABELS "example;gpu")
    endif()
  endforeach()
endfunction()

# Packaging is tested both ways (Boost.Mp11 style): a consumer that find_package()s an installed
# tandem, and one that add_subdirectory()s the source tree. Each configures, builds and runs.
function(tandem_add_package_tests)
  set(src ${PROJECT_SOURCE_DIR}/tests/package)
  if(NOT EXISTS ${src}/consumer.cpp)
    return()
  endif()
  set(bin ${PROJECT_BINARY_DIR}/package)
  set(prefix ${bin}/prefix)
  # Start from nothing, so a header left over from an earlier install cannot hide a missing rule.
  add_test(NAME package.clean COMMAND ${CMAKE_COMMAND} -E rm -rf ${prefix} ${bin}/find_package ${bin}/add_subdirectory)
  add_test(NAME package.install COMMAND ${CMAKE_COMMAND} --install ${PROJECT_BINARY_DIR} --prefix ${prefix} --config $<CONFIG>)
  set_tests_properties(package.clean PROPERTIES FIXTURES_SETUP tandem_package_clean)
  set_tests_properties(package.install PROPERTIES FIXTURES_SETUP tandem_installed FIXTURES_REQUIRED tandem_package_clean)

  set(options -DCMAKE_BUILD_TYPE=$<IF:$<CONFIG:>,Release,$<CONFIG>> -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
              -DTANDEM_ENABLE_CUDA=${TANDEM_ENABLE_CUDA} -DEigen3_DIR=${Eigen3_DIR})
  if(CUDAToolkit_BIN_DIR)
    list(APPEND options -DCUDAToolkit_ROOT=${CUDAToolkit_BIN_DIR}/..)
  endif()
  foreach(kind IN ITEMS find_package add_subdirectory)
    set(extra -DTANDEM_SOURCE_DIR=${PROJECT_SOURCE_DIR})
    if(kind STREQUAL "find_package")
      set(extra -DCMAKE_PREFIX_PATH=${prefix})
    endif()
    add_test(NAME package.${kind}
             COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test ${src}/${kind} ${bin}/${kind}
                     --build-generator ${CMAKE_GENERATOR} --build-makeprogram ${CMAKE_MAKE_PROGRAM}
                     --build-options ${options} ${extra} --test-command consumer)
    set_tests_properties(package.${kind} PROPERTIES FIXTURES_REQUIRED tandem_package_clean)
  endforeach()
  set_tests_properties(package.find_package PROPERTIES FIXTURES_REQUIRED "tandem_package_clean;tandem_installed")
  set_tests_properties(package.clean package.install package.find_package package.add_subdirectory
                       PROPERTIES LABELS package)
endfunction()

# Formatting is the machine's job: only where clang-format exists, so its absence is no failure.
function(tandem_add_format_check)
  find_program(TANDEM_CLANG_FORMAT NAMES clang-format clang-format-14 DOC "clang-format for the format test")
  if(TANDEM_CLANG_FORMAT)
    add_test(NAME format COMMAND ${PROJECT_SOURCE_DIR}/scripts/format-check.sh)
    set_tests_properties(format PROPERTIES LABELS lint ENVIRONMENT CLANG_FORMAT=${TANDEM_CLANG_FORMAT})
  endif()
endfunction()

# Every relative link of README.md, CHANGELOG.md and docs/ must resolve (a file, or a heading's anchor).
function(tandem_add_docs_check)
  add_test(NAME docs.links COMMAND ${PROJECT_SOURCE_DIR}/scripts/check-doc-links.sh)
  set_tests_properties(docs.links PROPERTIES LABELS lint)
endfunction()

# Folders with their own CMakeLists.txt (reference tests, benchmarks). They get TANDEM_TORCH_PYTHON:
# a Python that imports torch (Debian's /usr/bin/python3 first: a pyenv python3 on PATH may lack it).
function(tandem_add_optional_subdirectories)
  foreach(dir IN LISTS ARGN)
    if(EXISTS ${PROJECT_SOURCE_DIR}/${dir}/CMakeLists.txt)
      tandem_find_torch_python()
      add_subdirectory(${dir})
    endif()
  endforeach()
endfunction()

function(tandem_find_torch_python)
  if(DEFINED TANDEM_TORCH_PYTHON)
    return()
  endif()
  set(found TANDEM_TORCH_PYTHON-NOTFOUND)
  foreach(python IN ITEMS /usr/bin/python3 python3 python)
    find_program(candidate ${python} NO_CACHE)
    if(candidate)
      execute_process(COMMAND ${candidate} -c "import torch" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
      if(rc EQUAL 0)
        set(found ${candidate})
        break()
      endif()
    endif()
    unset(candidate)
  endforeach()
  set(TANDEM_TORCH_PYTHON ${found} CACHE FILEPATH "Python interpreter with torch, for reference tests")
  message(STATUS "tandem: Python with torch: ${found}")
endfunction()

# The README's first C++ block is the example a newcomer copies: it is extracted at configure
# time, built and run (test readme.example), so the README cannot drift from the library.
function(tandem_add_readme_example)
  file(READ ${PROJECT_SOURCE_DIR}/README.md readme)
  if(NOT readme MATCHES "```cpp\n([^`]*)```")
    message(FATAL_ERROR "README.md has no ```cpp block to test")
  endif()
  set(source ${PROJECT_BINARY_DIR}/readme_example.cpp)
  file(CONFIGURE OUTPUT ${source} CONTENT "${CMAKE_MATCH_1}" @ONLY)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/README.md)
  add_executable(readme_example ${source})
  _tandem_test_target(readme_example)
  add_test(NAME readme.example COMMAND readme_example)
  set_tests_properties(readme.example PROPERTIES LABELS example)
endfunction()

# Stages across processes, where MPI and mpiexec are found: tests/mpi/*.cpp form one program, run on
# 1, 2, 3 and 4 ranks against the single-process network it also builds, and each
# examples/NN_distributed runs on 2 ranks. More ranks than cores is fine (Open MPI: --oversubscribe);
# CI runs as root, which Open MPI refuses unless told.
function(tandem_add_mpi_tests)
  if(NOT TARGET tandem::distributed OR NOT MPIEXEC_EXECUTABLE)
    return()
  endif()
  set(launch ${MPIEXEC_EXECUTABLE} ${MPIEXEC_PREFLAGS})
  if(MPI_CXX_LIBRARY_VERSION_STRING MATCHES "Open MPI")
    list(APPEND launch --oversubscribe)
  endif()
  set(environment OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1)
  file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/mpi/*.cpp)
  if(NOT TARGET tandem::checkpoint)
    list(FILTER sources EXCLUDE REGEX "/checkpoint[^/]*\\.cpp$") # they need nlohmann-json
  endif()
  if(sources)
    find_package(doctest REQUIRED)
    add_executable(tandem_mpi_tests ${sources})
    _tandem_test_program(tandem_mpi_tests)
    target_link_libraries(tandem_mpi_tests PRIVATE tandem::distributed doctest::doctest
                                                   $<TARGET_NAME_IF_EXISTS:tandem::checkpoint>)
    foreach(ranks IN ITEMS 1 2 3 4)
      add_test(NAME mpi.ranks${ranks} COMMAND ${launch} ${MPIEXEC_NUMPROC_FLAG} ${ranks} $<TARGET_FILE:tandem_mpi_tests>
                                             ${MPIEXEC_POSTFLAGS})
      # Alone: the timeout tests wait about a second for a rank, which a loaded machine could stretch.
      set_tests_properties(mpi.ranks${ranks} PROPERTIES LABELS mpi ENVIRONMENT "${environment}" TIMEOUT 120 RUN_SERIAL TRUE)
    endforeach()
    # MPI runs that go wrong say so: a process without an Environment warns once that it runs
    # alone; an Error that escapes main prints its message (no backtrace) and ends the job.
    add_test(NAME mpi.alone COMMAND ${launch} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:tandem_mpi_tests> --alone)
    set_tests_properties(mpi.alone PROPERTIES LABELS mpi ENVIRONMENT "${environment}" TIMEOUT 60
                         PASS_REGULAR_EXPRESSION "runs alone, as 2 independent copies"
                         FAIL_REGULAR_EXPRESSION "independent copies.*independent copies.*independent copies")
    add_test(NAME mpi.uncaught COMMAND ${launch} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:tandem_mpi_tests> --uncaught)
    set_tests_properties(mpi.uncaught PROPERTIES LABELS mpi ENVIRONMENT "${environment}" TIMEOUT 60
                         PASS_REGULAR_EXPRESSION "tandem: rank [01]: uncaught exception: tandem: thrown out of main on rank [01]; ending the MPI job"
                         FAIL_REGULAR_EXPRESSION "terminate called|received signal|Backtrace")
  endif()
  file(GLOB dirs LIST_DIRECTORIES true CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/examples/*_distributed)
  foreach(dir IN LISTS dirs)
    get_filename_component(name ${dir} NAME)
    if(EXISTS ${dir}/main.cpp)
      add_executable(example_${name} ${dir}/main.cpp)
      _tandem_test_target(example_${name})
      # Kernels compiled once (tandem::compiled, at the build type's flags), not again in every
      # example; header-only builds are covered by the reference tests, readme.example, the
      # package consumers and the builds without CMake.
      target_link_libraries(example_${name} PRIVATE tandem::compiled)
      target_link_libraries(example_${name} PRIVATE tandem::distributed)
      add_test(NAME example.${name} COMMAND ${launch} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:example_${name}>
                                            ${MPIEXEC_POSTFLAGS})
      set_tests_properties(example.${name} PROPERTIES LABELS "mpi;example" ENVIRONMENT "${environment}" TIMEOUT 120)
    endif()
  endforeach()
endfunction()
