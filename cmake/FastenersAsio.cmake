# Finds standalone Asio for fasteners/asio.hpp's tests and example, and whether C++20 coroutines
# work with it (use_awaitable). Sets FASTENERS_ASIO_FOUND, FASTENERS_ASIO_INCLUDE_DIR,
# FASTENERS_ASIO_COROUTINES, FASTENERS_ASIO_WHY_NO_COROUTINES, and defines
# fasteners_use_asio(target), which sets a target up for them.
include_guard(GLOBAL)

find_path(FASTENERS_ASIO_INCLUDE_DIR asio.hpp DOC "Where standalone Asio's asio.hpp is")
if(FASTENERS_ASIO_INCLUDE_DIR AND EXISTS "${FASTENERS_ASIO_INCLUDE_DIR}/asio/version.hpp")
  file(STRINGS "${FASTENERS_ASIO_INCLUDE_DIR}/asio/version.hpp" fasteners_asio_version_line
       REGEX "^#define ASIO_VERSION [0-9]+")
  string(REGEX REPLACE "^#define ASIO_VERSION ([0-9]+).*" "\\1" fasteners_asio_version
         "${fasteners_asio_version_line}")
  # Per-operation cancellation came with Asio 1.19 (101900).
  if(fasteners_asio_version GREATER_EQUAL 101900)
    set(FASTENERS_ASIO_FOUND ON)
  else()
    set(FASTENERS_ASIO_FOUND OFF)
    message(STATUS "fasteners: Asio ${fasteners_asio_version} is older than 1.19; "
                   "skipping the Asio tests and example")
  endif()
else()
  set(FASTENERS_ASIO_FOUND OFF)
  message(STATUS "fasteners: standalone Asio (asio.hpp) not found; skipping the Asio tests and "
                 "example (Debian: libasio-dev, which scripts/setup.sh installs)")
endif()

set(FASTENERS_ASIO_COROUTINES OFF)
set(FASTENERS_ASIO_CO_AWAIT_DEFINITION "")
set(FASTENERS_ASIO_WHY_NO_COROUTINES "")
if(FASTENERS_ASIO_FOUND)
  if(NOT "cxx_std_20" IN_LIST CMAKE_CXX_COMPILE_FEATURES)
    set(FASTENERS_ASIO_WHY_NO_COROUTINES "the compiler has no C++20 mode")
  else()
    # A coroutine that awaits an Asio operation, built as C++20; Asio 1.22 does not turn on
    # co_await for Clang with libstdc++, which works when told to (ASIO_HAS_CO_AWAIT).
    set(fasteners_asio_probe "${CMAKE_BINARY_DIR}/fasteners_asio_probe.cpp")
    file(WRITE "${fasteners_asio_probe}" [=[
#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#ifndef ASIO_HAS_CO_AWAIT
#error "no co_await in Asio"
#endif
using namespace asio::experimental::awaitable_operators;
asio::awaitable<void> wait(asio::steady_timer& t) { co_await t.async_wait(asio::use_awaitable); }
asio::awaitable<void> race() {
  asio::steady_timer a(co_await asio::this_coro::executor), b(a.get_executor());
  co_await (wait(a) || wait(b));
}
int main() {
  asio::io_context io;
  asio::co_spawn(io, race(), asio::detached);
  io.run();
}
]=])
    foreach(fasteners_asio_definition "" "ASIO_HAS_CO_AWAIT=1")
      if(NOT FASTENERS_ASIO_COROUTINES)
        if(fasteners_asio_definition)
          set(fasteners_asio_flag "-D${fasteners_asio_definition}")
        else()
          set(fasteners_asio_flag "")
        endif()
        try_compile(fasteners_asio_probe_ok "${CMAKE_BINARY_DIR}/fasteners_asio_probe"
          SOURCES "${fasteners_asio_probe}"
          CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${FASTENERS_ASIO_INCLUDE_DIR}"
          COMPILE_DEFINITIONS ${fasteners_asio_flag}
          LINK_LIBRARIES Threads::Threads
          CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
        if(fasteners_asio_probe_ok)
          set(FASTENERS_ASIO_COROUTINES ON)
          set(FASTENERS_ASIO_CO_AWAIT_DEFINITION "${fasteners_asio_definition}")
        endif()
        unset(fasteners_asio_probe_ok CACHE)
      endif()
    endforeach()
    if(NOT FASTENERS_ASIO_COROUTINES)
      set(FASTENERS_ASIO_WHY_NO_COROUTINES
          "the compiler's C++20 coroutines do not build with Asio's awaitables")
    endif()
  endif()
  if(FASTENERS_ASIO_COROUTINES)
    if(FASTENERS_ASIO_CO_AWAIT_DEFINITION)
      set(fasteners_asio_how " (turned on with ${FASTENERS_ASIO_CO_AWAIT_DEFINITION})")
    endif()
    message(STATUS "fasteners: Asio ${fasteners_asio_version} with C++20 coroutines"
                   "${fasteners_asio_how}")
  else()
    message(STATUS "fasteners: Asio ${fasteners_asio_version} without coroutines: "
                   "${FASTENERS_ASIO_WHY_NO_COROUTINES}")
  endif()
endif()

# Builds `target` with Asio, as C++20 where coroutines work with it (the library stays C++17).
function(fasteners_use_asio target)
  target_include_directories(${target} SYSTEM PRIVATE ${FASTENERS_ASIO_INCLUDE_DIR})
  target_link_libraries(${target} PRIVATE Threads::Threads)
  if(FASTENERS_ASIO_COROUTINES)
    set_target_properties(${target} PROPERTIES CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON)
    if(FASTENERS_ASIO_CO_AWAIT_DEFINITION)
      target_compile_definitions(${target} PRIVATE ${FASTENERS_ASIO_CO_AWAIT_DEFINITION})
    endif()
    # Clang before 16 cannot build coroutines with -fsanitize=function (part of "undefined"):
    # "Cannot represent a difference across sections".
    if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 16
       AND FASTENERS_SANITIZE MATCHES "undefined")
      target_compile_options(${target} PRIVATE -fno-sanitize=function)
    endif()
  endif()
endfunction()
