# Compiler warnings and sanitizers for the project's own targets.
function(fasteners_set_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${FASTENERS_WERROR}>:/WX>)
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
      -Wsign-conversion -Wnon-virtual-dtor -Wold-style-cast $<$<BOOL:${FASTENERS_WERROR}>:-Werror>
      # Clang checks the locking rules written down with the annotations of src/thread_safety.hpp.
      $<$<CXX_COMPILER_ID:Clang>:-Wthread-safety -Wthread-safety-beta>)
  endif()
endfunction()

if(FASTENERS_SANITIZE)
  add_compile_options(-fsanitize=${FASTENERS_SANITIZE} -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${FASTENERS_SANITIZE})
  if(FASTENERS_SANITIZE MATCHES "undefined")
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
endif()
