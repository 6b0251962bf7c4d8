# SPDX-License-Identifier: Apache-2.0
# One compile-fail check, run by CTest as
#   cmake -DCONFIG=<compile_check_config.cmake> -DCOMPILER=gxx|clang|nvcc -DMODE=fail|twin -DSOURCE=<file>
#         [-DQUOTE_DIR=<folder for "quoted" includes>] -P this
# MODE=fail compiles SOURCE with -DTANDEM_COMPILE_FAIL: it passes only if the compiler rejects it
# AND its output matches the regex of the file's `// expect: <regex>` line (a `// expect-<compiler>:`
# line overrides it for that compiler). MODE=twin compiles it without the define and must succeed
# (SOURCE is then one case, or the generated file holding the twins of all of them).
# The regex is CMake's dialect: `.` also matches newlines; no \d or {n} (write [0-9]+); escape ( [ + *.
include(${CONFIG}) # sets <compiler>_command and <compiler>_flags

set(defines "") # and include folders
if(MODE STREQUAL "fail")
  file(STRINGS ${SOURCE} head LIMIT_COUNT 8)
  set(regex "")
  foreach(line IN LISTS head)
    if(line MATCHES "^// expect: (.*)$" AND regex STREQUAL "")
      set(regex "${CMAKE_MATCH_1}")
    elseif(line MATCHES "^// expect-${COMPILER}: (.*)$")
      set(regex "${CMAKE_MATCH_1}")
      break()
    endif()
  endforeach()
  if(regex STREQUAL "")
    message(FATAL_ERROR "${SOURCE}: no `// expect: <regex>` line at the top of the file")
  endif()
  # The checks under test sit in the public headers' templates, never in a kernel's body: the
  # view of a program linked with tandem::compiled (kernels declared, Eigen not parsed) shows them
  # the same, at about three quarters of the front end's time. The twins compile header-only.
  set(defines -DTANDEM_COMPILE_FAIL -DTANDEM_COMPILED)
endif()
if(QUOTE_DIR)
  list(APPEND defines -I${QUOTE_DIR})
endif()
set(ENV{LC_ALL} C) # plain ASCII quotes in g++'s messages, whatever the caller's locale
execute_process(COMMAND ${${COMPILER}_command} ${${COMPILER}_flags} ${defines} ${SOURCE}
                RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
list(JOIN ${COMPILER}_command " " shown)
# message(FATAL_ERROR) re-wraps its text: print the compiler's own lines as they came.
macro(fail why)
  message(NOTICE "${output}")
  message(FATAL_ERROR "${why}")
endmacro()

if(MODE STREQUAL "twin")
  if(NOT result EQUAL 0)
    fail("The twin (without TANDEM_COMPILE_FAIL) must compile, but ${shown} rejected it (output above)")
  endif()
  message(STATUS "twin compiles with ${COMPILER}")
elseif(result EQUAL 0)
  message(FATAL_ERROR "Expected a compile error matching\n  ${regex}\nbut ${shown} accepted ${SOURCE}")
elseif(NOT output MATCHES "${regex}")
  fail("Compilation failed as expected, but ${COMPILER}'s output (above) does not match\n  ${regex}")
else()
  string(SUBSTRING "${CMAKE_MATCH_0}" 0 300 matched)
  message(STATUS "${COMPILER} rejects it with the expected diagnostic: ${matched}")
endif()
