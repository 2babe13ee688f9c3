# cmake -DBUILD_DIR=... -DWORK_DIR=... -DCONSUMER_DIR=... -DARTIFACT=... [-DGENERATOR=...] -P install_test.cmake
# Installs the build tree into WORK_DIR/prefix, then configures, builds and runs a consumer project that
# uses find_package(fxlower CONFIG) against that prefix only.
file(REMOVE_RECURSE "${WORK_DIR}")
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message("${out}")
endfunction()
run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
if(NOT EXISTS "${WORK_DIR}/prefix/include/fxlower/fxlower.hpp")
  message(FATAL_ERROR "the header was not installed")
endif()
run("${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK_DIR}/consumer" -G "${GENERATOR}"
    "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" -DCMAKE_BUILD_TYPE=Release)
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/consumer")
run("${WORK_DIR}/consumer/consumer" "${ARTIFACT}")
