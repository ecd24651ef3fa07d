# Fails when BINARY needs a shared library outside the allowed set (glibc, OpenSSL): the agent's footprint
# depends on it (docs/benchmarks.md, "Agent daemon footprint").
cmake_minimum_required(VERSION 3.25)
execute_process(COMMAND ${READELF} -d ${BINARY} OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf -d ${BINARY} failed")
endif()
string(REGEX MATCHALL "Shared library: \\[[^]]+\\]" needed "${dynamic}")
# Not libm: its one use (valijson's remainder) is answered in shared/src/site/valijson_remainder.hpp.
set(allowed libc.so.6 libssl.so.3 libcrypto.so.3 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1)
set(unexpected "")
foreach(entry IN LISTS needed)
  string(REGEX REPLACE "Shared library: \\[([^]]+)\\]" "\\1" lib "${entry}")
  if(NOT lib IN_LIST allowed)
    list(APPEND unexpected ${lib})
  endif()
endforeach()
if(unexpected)
  message(FATAL_ERROR "${BINARY} needs ${unexpected}: the agent links only glibc and OpenSSL as shared "
                      "libraries (NODEFORM_AGENT_STATIC_RUNTIME); link the library statically or drop it")
endif()
