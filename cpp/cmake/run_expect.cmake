# cmake -DCMD="prog;arg;..." [-DEXPECT_RC=N | -DEXPECT_FAIL=1] [-DEXPECT_STDOUT=regex] [-DEXPECT_STDERR=regex]
#       [-DREJECT_STDOUT=regex]
#       -P run_expect.cmake
# Runs CMD and checks its exit status (EXPECT_FAIL: any failure, a signal included) and output.
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit: ${rc}\nstdout:\n${out}\nstderr:\n${err}")
if(DEFINED EXPECT_RC AND NOT rc STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "expected exit status ${EXPECT_RC}, got ${rc}")
endif()
if(EXPECT_FAIL AND rc STREQUAL "0")
  message(FATAL_ERROR "expected a failure, got exit status 0")
endif()
if(DEFINED EXPECT_STDOUT AND NOT out MATCHES "${EXPECT_STDOUT}")
  message(FATAL_ERROR "stdout does not match: ${EXPECT_STDOUT}")
endif()
if(DEFINED EXPECT_STDERR AND NOT err MATCHES "${EXPECT_STDERR}")
  message(FATAL_ERROR "stderr does not match: ${EXPECT_STDERR}")
endif()
if(DEFINED REJECT_STDOUT AND out MATCHES "${REJECT_STDOUT}")
  message(FATAL_ERROR "stdout matches what it must not: ${REJECT_STDOUT}")
endif()
