# CONDUCTOR_SANITIZE: build every target of the project with sanitizers.
#   ""                   none (the default)
#   "address,undefined"  AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer;
#                        UB aborts instead of printing and going on
#   "thread"             ThreadSanitizer
# Include this from the top-level CMakeLists.txt before any target is created.
#
# Why project-wide: the project's style sets compile options per target. Sanitizers are the
# accepted exception, because they must be the same in every object that shares a process:
# an ASan library linked into an uninstrumented test misses the test's own errors, and TSan sees
# only instrumented code, so an uninstrumented caller hides one side of every race it takes
# part in. A directory-wide add_compile_options/add_link_options, set only when this option is,
# reaches the library, apps, tests and fuzzers alike, including targets added later, and leaves
# the imported third-party targets alone (they are prebuilt anyway).
# The Python module cannot be imported by an uninstrumented python3 without preloading the
# sanitizer runtime: under address,undefined the python test preloads it (tests/CMakeLists.txt);
# scripts/sanitize builds the module for ASan only.

set(CONDUCTOR_SANITIZE "" CACHE STRING
    "Sanitizers for every target: \"\", \"address,undefined\" or \"thread\"")
set_property(CACHE CONDUCTOR_SANITIZE PROPERTY STRINGS "" "address,undefined" "thread")

if(CONDUCTOR_SANITIZE STREQUAL "")
  return()
endif()

if(NOT CMAKE_CXX_COMPILER_ID MATCHES "^(GNU|Clang)$")
  message(FATAL_ERROR "CONDUCTOR_SANITIZE needs GCC or Clang, not ${CMAKE_CXX_COMPILER_ID}")
endif()

if(CONDUCTOR_SANITIZE STREQUAL "address,undefined")
  # Without -fno-sanitize-recover UBSan prints and carries on, and the test passes anyway.
  set(_conductor_sanitize_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined)
elseif(CONDUCTOR_SANITIZE STREQUAL "thread")
  set(_conductor_sanitize_flags -fsanitize=thread)
else()
  message(FATAL_ERROR "CONDUCTOR_SANITIZE='${CONDUCTOR_SANITIZE}' is not one of "
                      "\"\", \"address,undefined\", \"thread\"")
endif()

# Frame pointers keep the reports' stack traces complete at -O1 and above. GCC's manual warns
# that sanitizers give -Wmaybe-uninitialized false positives; with GCC 12 they come by the
# dozen from <regex> and std::optional, so that warning is off in sanitized GCC builds only.
add_compile_options(${_conductor_sanitize_flags} -fno-omit-frame-pointer
                    $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
add_link_options(${_conductor_sanitize_flags})
message(STATUS "conductor: every target is built with ${_conductor_sanitize_flags}")
unset(_conductor_sanitize_flags)
