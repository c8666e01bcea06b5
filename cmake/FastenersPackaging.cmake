# Install rules beside the CMake package (pkg-config files, the man page) and the Debian package
# (`cpack -G DEB`). Included by the top-level CMakeLists.txt when FASTENERS_INSTALL is on.
include(GNUInstallDirs)

# A directory of GNUInstallDirs as pkg-config should see it: under ${prefix} when relative.
function(fasteners_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

# fasteners_install_pkg_config(NAME): installs NAME.pc from cmake/NAME.pc.in. It is written at install
# time, so that prefix= is the prefix installed to (`cmake --install --prefix`, CPack), not the one
# configured; DESTDIR is honoured.
function(fasteners_install_pkg_config name)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(destination "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
  else()
    set(destination "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig")
  endif()
  # Every @VARIABLE@ of the template but the prefix is known now.
  set(FASTENERS_PC_PREFIX "@FASTENERS_PC_PREFIX@")
  set(template "${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc.in")
  set(output "${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc")
  configure_file("${PROJECT_SOURCE_DIR}/cmake/${name}.pc.in" "${template}" @ONLY)
  install(CODE "
    set(FASTENERS_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file([[${template}]] [[${output}]] @ONLY)
    file(INSTALL [[${output}]] DESTINATION \"${destination}\")")
endfunction()

fasteners_pc_dir(FASTENERS_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
fasteners_pc_dir(FASTENERS_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
# What the targets' interfaces add: Threads::Threads, and FASTENERS_SHARED in a shared build.
set(FASTENERS_PC_THREADS "")
if(NOT WIN32)
  set(FASTENERS_PC_THREADS "-pthread")
endif()
set(FASTENERS_PC_DEFINES "")
if(BUILD_SHARED_LIBS)
  set(FASTENERS_PC_DEFINES " -DFASTENERS_SHARED")
endif()
fasteners_install_pkg_config(fasteners)

# fasteners-postgres: a shared libfasteners_postgres brings libpq and libcrypto itself, so they are
# private (and pkg-config needs neither libpq-dev nor libssl-dev); a static one needs them linked.
if(FASTENERS_POSTGRES)
  if(BUILD_SHARED_LIBS)
    set(FASTENERS_PC_POSTGRES_REQUIRES "")
    set(FASTENERS_PC_POSTGRES_LIBS_PRIVATE "-lpq -lcrypto")
  else()
    set(FASTENERS_PC_POSTGRES_REQUIRES ", libpq, libcrypto")
    set(FASTENERS_PC_POSTGRES_LIBS_PRIVATE "")
  endif()
  fasteners_install_pkg_config(fasteners-postgres)
endif()

# The man page goes with the command.
if(TARGET fasteners_cli)
  install(FILES "${PROJECT_SOURCE_DIR}/docs/fasteners.1" DESTINATION "${CMAKE_INSTALL_MANDIR}/man1")
endif()

# `cpack -G DEB` in the build directory: one package with the library, its headers, the CMake and
# pkg-config files, the command and its man page. Depends is computed by dpkg-shlibdeps (dpkg-dev).
if(FASTENERS_TOP_LEVEL)
  set(CPACK_PACKAGE_NAME fasteners)
  set(CPACK_PACKAGE_VENDOR "fasteners for C++")
  set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
  set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
      "inter-process locks on lock files for C++17, and the fasteners command")
  set(CPACK_PACKAGE_DESCRIPTION
      "A C++17 library of inter-process locks on lock files (an exclusive lock and a reader-writer
lock) that interoperates with python-fasteners, with its headers, CMake package and pkg-config
files; fasteners::postgres, the same locks on PostgreSQL advisory locks, where it was built; and
the fasteners command (fasteners run, fasteners status), locks for shell scripts like flock(1).")
  set(CPACK_PACKAGE_CONTACT "fasteners for C++ maintainers <fasteners@localhost>")
  set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
  # Install scripts see CMAKE_INSTALL_PREFIX=/usr (and DESTDIR) rather than the staging
  # directory, which the pkg-config files would otherwise name.
  set(CPACK_SET_DESTDIR ON)
  set(CPACK_INSTALL_PREFIX /usr)
  if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
    set(CPACK_GENERATOR DEB)
  else()
    set(CPACK_GENERATOR TGZ)
  endif()
  set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
  set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
  # fasteners/asio.hpp, header-only, needs standalone Asio.
  set(CPACK_DEBIAN_PACKAGE_SUGGESTS libasio-dev)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  if(BUILD_SHARED_LIBS)
    # A shlibs file and the ldconfig trigger, for libfasteners.so.N.
    set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
  endif()
  include(CPack)
endif()
