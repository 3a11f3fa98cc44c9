# tb_add_plugin(NAME SOURCES file... [LIBS lib...] [TARGET target] [OUTPUT_DIR dir] [INSTALL])
#
# One executor plugin: a MODULE library NAME.so (no "lib" prefix) in
# OUTPUT_DIR (default ${CMAKE_BINARY_DIR}/plugins), built like an outside
# author's plugin: only core/include (taskbus/plugin.h, plugin_util.h) on the
# include path, no taskbus library linked, hidden symbols but the entry
# point, and -Wl,--no-undefined to prove it needs no host symbol. LIBS are
# linked privately, beside Threads::Threads. TARGET defaults to plugin_NAME.
# INSTALL installs it to LIBDIR/taskbus/plugins, where an installed taskbusd
# looks first (tb_plugin_default_dir()); test fixtures leave it out.
# Included by the top-level CMakeLists.txt; used by plugins/*/CMakeLists.txt
# and tests/plugins/fixtures/CMakeLists.txt.
function(tb_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 TBP "INSTALL" "TARGET;OUTPUT_DIR" "SOURCES;LIBS")
  if(TBP_UNPARSED_ARGUMENTS OR NOT TBP_SOURCES)
    message(FATAL_ERROR "tb_add_plugin(${name}): expected SOURCES file... [LIBS lib...] "
                        "[TARGET target] [OUTPUT_DIR dir] [INSTALL], got: ${ARGN}")
  endif()
  if(NOT TBP_TARGET)
    set(TBP_TARGET plugin_${name})
  endif()
  if(NOT TBP_OUTPUT_DIR)
    set(TBP_OUTPUT_DIR ${CMAKE_BINARY_DIR}/plugins)
  endif()
  add_library(${TBP_TARGET} MODULE ${TBP_SOURCES})
  target_include_directories(${TBP_TARGET} PRIVATE ${CMAKE_SOURCE_DIR}/core/include)
  target_compile_definitions(${TBP_TARGET} PRIVATE _GNU_SOURCE)
  target_link_libraries(${TBP_TARGET} PRIVATE ${TBP_LIBS} Threads::Threads)
  target_link_options(${TBP_TARGET} PRIVATE -Wl,--no-undefined)
  set_target_properties(${TBP_TARGET} PROPERTIES
    OUTPUT_NAME ${name}
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY ${TBP_OUTPUT_DIR})
  if(TBP_INSTALL)
    install(TARGETS ${TBP_TARGET} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/taskbus/plugins)
  endif()
endfunction()
