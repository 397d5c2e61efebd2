#!/usr/bin/env bash
# `make install`: installs the built libpsremote into $DESTDIR$PREFIX as a system library.
#
#   lib/libpsremote.so.<VERSION>            the shared library (stripped), SONAME libpsremote.so.<ABI>
#   lib/libpsremote.so.<ABI>                -> libpsremote.so.<VERSION>  (what programs load)
#   lib/libpsremote.so                      -> libpsremote.so.<ABI>      (what -lpsremote finds)
#   lib/.debug/libpsremote.so.<VERSION>.debug  its debug information (compressed; the stripped
#                                           library names it in .gnu_debuglink, where gdb looks)
#   lib/libpsremote.a                       the static library (debug sections stripped)
#   include/psremote.h, lib/pkgconfig/psremote.pc,
#   lib/cmake/psremote/psremote-config.cmake and psremote-config-version.cmake
#
# <ABI> is the SONAME's series (bindings-c/build.rs: MAJOR, or 0.MINOR before 1.0); it is read
# from the built library, so the files and the SONAME cannot disagree.
#
# Environment (set by the Makefile): BUILT (directory holding libpsremote.so/.a), PREFIX
# (absolute), DESTDIR, VERSION, LIBS_PRIVATE; INSTALL_STRIP=0 installs both libraries as built
# (no stripping, no separate debug file).
set -euo pipefail

: "${BUILT:?}" "${PREFIX:?}" "${VERSION:?}" "${LIBS_PRIVATE:?}"
DESTDIR=${DESTDIR:-}
INSTALL_STRIP=${INSTALL_STRIP:-1}
STRIP=${STRIP:-strip}
OBJCOPY=${OBJCOPY:-objcopy}
here=$(cd "$(dirname "$0")" && pwd)
case $PREFIX in /*) ;; *) echo "install.sh: PREFIX must be absolute (got $PREFIX)" >&2; exit 1 ;; esac

so=$BUILT/libpsremote.so
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
case $soname in
  libpsremote.so.?*) abi=${soname#libpsremote.so.} ;;
  *) echo "install.sh: $so has no SONAME libpsremote.so.<ABI> (bindings-c/build.rs sets it)" >&2; exit 1 ;;
esac
case $VERSION in
  "$abi" | "$abi".*) ;;
  *) echo "install.sh: SONAME $soname is not a series of version $VERSION" >&2; exit 1 ;;
esac
real=libpsremote.so.$VERSION
IFS=. read -r major minor _ <<<"$VERSION"
# The pointer size the library was built for (its ELF class): the CMake version file refuses
# projects of the other size.
case $(readelf -h "$so" | sed -n 's/^ *Class: *//p') in
  ELF64) sizeof_void_p=8 ;;
  ELF32) sizeof_void_p=4 ;;
  *) echo "install.sh: cannot read the ELF class of $so" >&2; exit 1 ;;
esac

lib=$DESTDIR$PREFIX/lib
inc=$DESTDIR$PREFIX/include
cmakedir=$lib/cmake/psremote
install -d "$inc" "$lib/pkgconfig" "$cmakedir"
install -m 644 "$here/../include/psremote.h" "$inc/psremote.h"

# The shared library: the real file, then the SONAME link and the development link. An older
# release's real file stays (programs linked against its SONAME keep loading it).
rm -f "$lib/$real" "$lib/$soname" "$lib/libpsremote.so"
install -m 755 "$so" "$lib/$real"
if [ "$INSTALL_STRIP" != 0 ]; then
  rm -f "$lib/.debug/$real.debug"
  if readelf -S "$so" | grep -q '\.debug_info'; then
    install -d "$lib/.debug"
    "$OBJCOPY" --only-keep-debug --compress-debug-sections=zlib "$so" "$lib/.debug/$real.debug"
    chmod 644 "$lib/.debug/$real.debug"
  fi
  "$STRIP" --strip-unneeded --remove-section=.comment "$lib/$real"
  if [ -e "$lib/.debug/$real.debug" ]; then
    # The link names the file only; gdb looks beside the library and in its .debug directory.
    (cd "$lib" && "$OBJCOPY" --add-gnu-debuglink=".debug/$real.debug" "$real")
  fi
fi
ln -s "$real" "$lib/$soname"
ln -s "$soname" "$lib/libpsremote.so"

install -m 644 "$BUILT/libpsremote.a" "$lib/libpsremote.a"
if [ "$INSTALL_STRIP" != 0 ]; then
  "$STRIP" --strip-debug "$lib/libpsremote.a"
fi

sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@VERSION@|$VERSION|g" -e "s|@LIBS_PRIVATE@|$LIBS_PRIVATE|g" \
  "$here/psremote.pc.in" >"$lib/pkgconfig/psremote.pc"

# The CMake package: paths relative to the config file, so the prefix can move.
cmake_libs=$(printf '%s' "$LIBS_PRIVATE" | tr -s ' ' ';')
for f in psremote-config.cmake psremote-config-version.cmake; do
  sed -e "s|@VERSION@|$VERSION|g" -e "s|@VERSION_MAJOR@|$major|g" -e "s|@VERSION_MINOR@|$minor|g" -e "s|@ABI@|$abi|g" -e "s|@SONAME@|$soname|g" \
    -e "s|@REAL@|$real|g" -e "s|@LIBS_PRIVATE@|$cmake_libs|g" \
    -e "s|@SIZEOF_VOID_P@|$sizeof_void_p|g" "$here/cmake/$f.in" >"$cmakedir/$f"
done
