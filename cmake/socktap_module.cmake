# socktap_module(<module> [CAPTURE_OPTIONAL] [EXCLUDE <file.c>...] [SOURCES <extra>...]
#                [PUBLIC <deps>...] [PRIVATE <deps>...])
#
# One static library st_<module> from every src/<module>/*.c (globbed, so a new file joins its
# module without a CMake edit), minus EXCLUDE (a tool's main), plus SOURCES (generated code).
# CAPTURE_OPTIONAL drops capture*/tap* sources when -DSOCKTAP_CAPTURE=OFF.
#
# The deps encode the layering (see the top-level CMakeLists.txt): PUBLIC when the module's
# headers include the dependency's, PRIVATE when only its .c files do. A module may use only the
# modules it lists; scripts/check_layers.sh checks the same graph on the #include lines.
function(socktap_module module)
  cmake_parse_arguments(PARSE_ARGV 1 M "CAPTURE_OPTIONAL" "" "EXCLUDE;SOURCES;PUBLIC;PRIVATE")
  set(dir ${CMAKE_SOURCE_DIR}/src/${module})
  file(GLOB srcs CONFIGURE_DEPENDS ${dir}/*.c)
  foreach(f ${M_EXCLUDE})
    list(REMOVE_ITEM srcs ${dir}/${f})
  endforeach()
  if(M_CAPTURE_OPTIONAL AND NOT SOCKTAP_CAPTURE)
    list(FILTER srcs EXCLUDE REGEX "/(capture|tap)[^/]*\\.c$")
  endif()
  add_library(st_${module} STATIC ${srcs} ${M_SOURCES})
  target_link_libraries(st_${module} PUBLIC ${M_PUBLIC} PRIVATE ${M_PRIVATE})
endfunction()
