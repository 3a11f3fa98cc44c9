# Installation layout and the Debian package (included by the top-level
# CMakeLists.txt after the programs and plugins exist). docs/deploy.md.
#
#   cmake --install BUILD [--prefix P]   (or DESTDIR=D cmake --install BUILD)
#     bin/taskbusd, bin/taskbus
#     LIBDIR/taskbus/plugins/{shell,container,ssh}.so  (tb_add_plugin(... INSTALL))
#     include/taskbus/*.h, LIBDIR/pkgconfig/taskbus-plugin.pc
#     SYSCONFDIR/taskbus/taskbus.conf  (/etc/taskbus when the prefix is /usr)
#     share/doc/taskbus/  README.md, docs/*.md, the OpenAPI schema
#     lib/systemd/system/taskbusd@.service, taskbusd-executor@.service
#   cpack -G DEB --config BUILD/CPackConfig.cmake
#     taskbus_VERSION_ARCH.deb, from a tree configured with
#     -DCMAKE_INSTALL_PREFIX=/usr (tools/package makes a release one).

set(TB_BINDIR ${CMAKE_INSTALL_FULL_BINDIR})
set(TB_SYSCONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR})
set(TB_STATEDIR ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/lib/taskbus)
set(TB_DOCDIR ${CMAKE_INSTALL_FULL_DOCDIR})
set(TB_SYSTEMD_UNITDIR lib/systemd/system CACHE STRING
    "systemd system unit directory, relative to the prefix or absolute")

# The default configuration: a conffile of the package. Relative to the
# prefix unless GNUInstallDirs maps it outside (prefix /usr: /etc), so that
# `cmake --install --prefix P` of a /usr/local tree stays under P.
file(RELATIVE_PATH tb_sysconf_rel ${CMAKE_INSTALL_PREFIX} ${TB_SYSCONFDIR})
if(tb_sysconf_rel MATCHES "^\\.\\./")
  set(tb_sysconf_dest ${TB_SYSCONFDIR}/taskbus)
else()
  set(tb_sysconf_dest ${CMAKE_INSTALL_SYSCONFDIR}/taskbus)
endif()
install(FILES ${CMAKE_SOURCE_DIR}/config/taskbus.conf DESTINATION ${tb_sysconf_dest})

file(GLOB tb_docs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${tb_docs} ${CMAKE_SOURCE_DIR}/schemas/openapi.yaml
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/img DESTINATION ${CMAKE_INSTALL_DOCDIR})

foreach(unit taskbusd@.service taskbusd-executor@.service)
  configure_file(${CMAKE_SOURCE_DIR}/packaging/systemd/${unit}.in
                 ${CMAKE_BINARY_DIR}/packaging/systemd/${unit} @ONLY)
  install(FILES ${CMAKE_BINARY_DIR}/packaging/systemd/${unit} DESTINATION ${TB_SYSTEMD_UNITDIR})
endforeach()

# ---- the Debian package ------------------------------------------------------
foreach(script postinst prerm postrm conffiles)
  configure_file(${CMAKE_SOURCE_DIR}/packaging/debian/${script}.in
                 ${CMAKE_BINARY_DIR}/packaging/debian/${script} @ONLY)
endforeach()
file(CHMOD ${CMAKE_BINARY_DIR}/packaging/debian/postinst ${CMAKE_BINARY_DIR}/packaging/debian/prerm
     ${CMAKE_BINARY_DIR}/packaging/debian/postrm
     PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME taskbus)
set(CPACK_PACKAGE_VENDOR taskbus)
set(CPACK_PACKAGE_CONTACT "taskbus developers <dev@taskbus.local>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "distributed task scheduler on Kafka and PostgreSQL")
set(CPACK_PACKAGE_DESCRIPTION
    "taskbus runs tasks (once, every N, or cron in a time zone) exactly once on\n"
    "executor plugins (shell, container, SSH), keeping every run's outcome and\n"
    "output. Every change to a task is an Avro event in Kafka. This package has\n"
    "taskbusd (all roles), the taskbus CLI, the executor plugins, the plugin\n"
    "headers and systemd units.")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Beside what dpkg-shlibdeps finds: adduser for postinst. (The shell executor
# switches users itself: no setpriv, so no util-linux.)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "podman, postgresql, systemd")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/packaging/debian/postinst ${CMAKE_BINARY_DIR}/packaging/debian/prerm
    ${CMAKE_BINARY_DIR}/packaging/debian/postrm ${CMAKE_BINARY_DIR}/packaging/debian/conffiles)
# Checked when cpack runs: the units and scripts name absolute paths.
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_SOURCE_DIR}/packaging/cpack_check.cmake)
set(CPACK_TB_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
include(CPack)
