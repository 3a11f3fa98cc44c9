# CPACK_PROJECT_CONFIG_FILE: refuse to make a .deb whose units, scripts and
# compiled-in plugin directory name another prefix than /usr.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_TB_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "taskbus .deb: this build tree has CMAKE_INSTALL_PREFIX="
          "${CPACK_TB_INSTALL_PREFIX}; configure it with -DCMAKE_INSTALL_PREFIX=/usr "
          "(tools/package does)")
endif()
