#!/usr/bin/env bash
# Builds (once) the guest bundle for NVMe/TCP TLS with the Linux kernel peers: tlshd (the
# kernel's TLS handshake daemon, Debian ktls-utils) and keyctl (keyutils), with the libraries
# and the dynamic loader they run with, as one tarball the guest unpacks to /opt/tlshd and runs
# as `/opt/tlshd/ld.so --library-path /opt/tlshd/lib /opt/tlshd/tlshd`.
#
# ktls-utils is in Debian trixie (not bookworm), and trixie's tlshd needs trixie's GnuTLS and
# C library, so the bundle carries trixie's libraries and loader instead of the build machine's.
# The packages come from Debian with apt-get and a private source list and cache (the machine's
# apt configuration is not touched). Prints the tarball's path.
#
# Usage: tests/interop/tlshd.sh   (TLSHD_DIR: cache directory [${TMPDIR:-/tmp}/tlshd-bundle])
set -euo pipefail
dir="${TLSHD_DIR:-${TMPDIR:-/tmp}/tlshd-bundle}"
out="$dir/tlshd-bundle.tgz"
if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs"
echo "deb http://deb.debian.org/debian trixie main" > "$dir/apt/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
    -o Dir::State::Status=/dev/null -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -qq update >&2
pkgs=(ktls-utils keyutils libkeyutils1 libc6 libglib2.0-0t64 libgnutls30t64 libnl-3-200
      libnl-genl-3-200 libp11-kit0 libidn2-0 libunistring5 libtasn1-6 libnettle8t64
      libhogweed6t64 libgmp10 libffi8 libpcre2-8-0 libatomic1)
(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" >&2)
root="$dir/root"
rm -rf "$root" "$dir/bundle"
mkdir -p "$root" "$dir/bundle/lib"
for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$root"; done
cp "$root/usr/sbin/tlshd" "$dir/bundle/"
cp "$(find "$root" -path '*bin/keyctl' | head -n 1)" "$dir/bundle/"
cp -L "$root/usr/lib64/ld-linux-x86-64.so.2" "$dir/bundle/ld.so"
ld="$dir/bundle/ld.so"
libdir="$root/usr/lib/x86_64-linux-gnu"
for exe in "$dir/bundle/tlshd" "$dir/bundle/keyctl"; do
    "$ld" --library-path "$libdir" --list "$exe" | awk '/=> \// {print $3}' | while read -r l; do
        cp -L "$l" "$dir/bundle/lib/"
    done
done
# Every library must come from the bundle.
for exe in "$dir/bundle/tlshd" "$dir/bundle/keyctl"; do
    if "$ld" --library-path "$dir/bundle/lib" --list "$exe" | grep -q "not found"; then
        echo "tlshd bundle: missing libraries for $exe" >&2
        exit 1
    fi
done
tar czf "$out.tmp" -C "$dir/bundle" . && mv "$out.tmp" "$out"
echo "$out"
