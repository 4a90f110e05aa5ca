# Runs one libFuzzer harness for a bounded time (the fuzz.<name> ctest tests):
#   cmake -DFUZZER=<harness> -DSEEDS=<seed dir> -DWORK=<scratch dir> -DTIME=<s> -P run.cmake
# The seeds are copied into <WORK>/corpus first, so that the inputs libFuzzer adds
# never land in the repository; a crashing input is written to <WORK>/artifacts.
# libFuzzer exits non-zero on a crash, a leak, a timeout, the RSS limit or any
# sanitizer report, and so does this script.
foreach(var FUZZER SEEDS WORK TIME)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is missing")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/artifacts)
file(COPY ${SEEDS}/ DESTINATION ${WORK}/corpus)
execute_process(COMMAND ${FUZZER} -max_total_time=${TIME} -timeout=10 -rss_limit_mb=2048
                        -print_final_stats=1 -artifact_prefix=${WORK}/artifacts/ ${WORK}/corpus
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); the input that failed is in ${WORK}/artifacts/")
endif()
