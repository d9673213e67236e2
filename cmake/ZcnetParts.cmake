# The parts of zcnet and the arrows between them (docs/ARCHITECTURE.md,
# "Parts and arrows"), enforced by the build.
#
# Every part is one target. Its headers are staged, file by file, under
#   ${ZC_INCLUDE_ROOT}/<target>/<prefix>/<header>
# and that directory is the target's only public include directory. A
# target therefore sees exactly the headers of itself and of the parts it
# links (transitively, through PUBLIC/INTERFACE links): every include in
# the project is written "<prefix>/<header>" against one virtual root, and
# an include of a part that is not a declared dependency fails to compile
# with "No such file or directory". Nothing adds a source folder itself to
# an include path. tests/layering checks the whole matrix.
set(ZC_INCLUDE_ROOT ${PROJECT_BINARY_DIR}/include)
set_property(GLOBAL PROPERTY ZC_PARTS "")

# zc_part(<target> <STATIC|SHARED|INTERFACE>
#         [HEADERS <dir> PREFIX <prefix>]
#         [SOURCES <src>...] [DEPS <target>...] [PRIVATE_DEPS <target>...])
function(zc_part name kind)
  cmake_parse_arguments(P "" "HEADERS;PREFIX" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  if(kind STREQUAL "INTERFACE")
    add_library(${name} INTERFACE)
    set(scope INTERFACE)
  else()
    add_library(${name} ${kind} ${P_SOURCES})
    set(scope PUBLIC)
  endif()
  set(stage ${ZC_INCLUDE_ROOT}/${name})
  file(REMOVE_RECURSE ${stage})
  set(headers "")
  if(P_HEADERS)
    file(GLOB headers CONFIGURE_DEPENDS ${P_HEADERS}/*.hpp ${P_HEADERS}/*.h)
  endif()
  foreach(h IN LISTS headers)
    get_filename_component(base ${h} NAME)
    file(MAKE_DIRECTORY ${stage}/${P_PREFIX})
    file(CREATE_LINK ${h} ${stage}/${P_PREFIX}/${base} SYMBOLIC)
  endforeach()
  file(MAKE_DIRECTORY ${stage})
  # BUILD_INTERFACE: the staged tree is the build's; an installed part
  # (libzcnet, dist/CMakeLists.txt) names its installed include directory.
  target_include_directories(${name} ${scope} $<BUILD_INTERFACE:${stage}>)
  if(P_DEPS)
    target_link_libraries(${name} ${scope} ${P_DEPS})
  endif()
  if(P_PRIVATE_DEPS)
    target_link_libraries(${name} PRIVATE ${P_PRIVATE_DEPS})
  endif()
  set_property(GLOBAL APPEND PROPERTY ZC_PARTS ${name})
  set_property(TARGET ${name} PROPERTY ZC_PART_PREFIX ${P_PREFIX})
  # One staged header of the part, for tests/layering ("" when it has none).
  set(rep "")
  if(headers)
    list(GET headers 0 first)
    get_filename_component(first ${first} NAME)
    if(P_PREFIX)
      set(rep ${P_PREFIX}/${first})
    else()
      set(rep ${first})
    endif()
  endif()
  set_property(TARGET ${name} PROPERTY ZC_PART_HEADER "${rep}")
endfunction()
