# CMake toolchain for 64-bit Windows executables built with MinGW-w64 (Debian's
# g++-mingw-w64-x86-64-posix), run through Wine when CTest runs the tests:
#   cmake -S . -B build-windows -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(FASTENERS_MINGW_TRIPLE x86_64-w64-mingw32)
# The -posix variants use winpthreads, which std::thread and std::mutex need in GCC 12.
set(CMAKE_C_COMPILER ${FASTENERS_MINGW_TRIPLE}-gcc-posix)
set(CMAKE_CXX_COMPILER ${FASTENERS_MINGW_TRIPLE}-g++-posix)
set(CMAKE_RC_COMPILER ${FASTENERS_MINGW_TRIPLE}-windres)

set(CMAKE_FIND_ROOT_PATH /usr/${FASTENERS_MINGW_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# libgcc, libstdc++ and winpthread are linked in statically, so the executables run under Wine,
# or copied to Windows, without DLLs of their own. Not in a DLL build (BUILD_SHARED_LIBS): a DLL
# and the programs that use it must share one C++ runtime (one std::system_category(), for a
# start), so there they use its DLLs, which Wine finds through WINEPATH, as it finds the build's:
#   g=x86_64-w64-mingw32-g++-posix
#   export WINEPATH="Z:$(dirname "$($g -print-file-name=libstdc++-6.dll)");Z:$(dirname \
#     "$($g -print-file-name=libwinpthread-1.dll)");Z:$PWD/build-windows"
if(NOT BUILD_SHARED_LIBS)
  set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
endif()

# CTest and gtest_discover_tests run the executables through Wine (Debian: wine, wine64).
if(NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(FASTENERS_WINE NAMES wine wine64 wine-stable)
  if(FASTENERS_WINE)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${FASTENERS_WINE})
  endif()
endif()
