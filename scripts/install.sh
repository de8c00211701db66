#!/usr/bin/env bash
# The relocatable installed tree of stochseg (docs/install.md); `make install` and `make
# uninstall` call this.
#
#   scripts/install.sh install PREFIX BIN VENV    the built binary, ONNX Runtime from VENV's
#                                                 onnxruntime wheel (and its OpenVINO plugin
#                                                 package when present), the shipped pipelines,
#                                                 models and workflows, man pages, completions
#   scripts/install.sh uninstall PREFIX           removes what the manifest lists
#
# DESTDIR (environment) is put before PREFIX, for staging a package. The tree:
#   bin/stochseg
#   lib/stochseg/libonnxruntime.so.<version>, libonnxruntime_providers_shared.so
#   lib/stochseg/onnxruntime_ep_openvino/            (when VENV has the plugin package)
#   share/stochseg/pipelines/*.yaml, share/stochseg/onnx/*.onnx (pipelines use ../onnx/)
#   share/stochseg/workflows/                        (batch.mk, snakemake/, cwl/)
#   share/man/man1/stochseg.1, stochseg-<command>.1
#   share/bash-completion/completions/stochseg, share/zsh/site-functions/_stochseg,
#   share/fish/vendor_completions.d/stochseg.fish
#   share/stochseg/install-manifest                  (what was installed, relative to PREFIX)
#
# The manifest lists each file installed (`f PATH`) and each folder the install created
# (`d PATH`), so uninstall removes exactly those (folders only when empty) and works on the
# tree wherever it has been moved. Installing over an earlier install removes that one first.
# PREFIX itself is made when missing and left in place by uninstall.
set -euo pipefail

MANIFEST=share/stochseg/install-manifest

die() {
    echo "install.sh: $*" >&2
    exit 1
}

# mkdir -p that notes in the manifest each folder it creates, outermost first
make_dir() {
    local rel=$1 path=.
    local IFS=/
    for part in $rel; do
        path=$path/$part
        if [ ! -d "$ROOT/$path" ]; then
            mkdir "$ROOT/$path"
            echo "d ${path#./}" >>"$LIST"
        fi
    done
}

# put_file MODE SOURCE DEST (DEST relative to the prefix)
put_file() {
    make_dir "$(dirname "$3")"
    install -m "$1" "$2" "$ROOT/$3"
    echo "f $3" >>"$LIST"
}

uninstall() {
    local root=$1 entries kind rel
    [ -f "$root/$MANIFEST" ] || die "$root/$MANIFEST: no manifest, nothing installed there"
    entries=$(cat "$root/$MANIFEST")
    # files, then the manifest, then the folders the install created, innermost first, if empty
    while read -r kind rel; do
        if [ "$kind" = f ]; then rm -f "$root/$rel"; fi
    done <<<"$entries"
    rm -f "$root/$MANIFEST"
    sed -n 's/^d //p' <<<"$entries" | sort -r | while read -r rel; do
        rmdir "$root/$rel" 2>/dev/null || true
    done
}

# the newest libonnxruntime.so.* of a venv's onnxruntime wheel
ort_capi() {
    local lib
    lib=$(ls -1 "$1"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null |
        sort -V | tail -n1)
    [ -n "$lib" ] || die "no onnxruntime wheel in $1 (run make setup)"
    dirname "$lib"
}

install_tree() {
    local bin=$1 venv=$2 capi site f
    [ -x "$bin" ] || die "$bin: no binary (run make build)"
    capi=$(ort_capi "$venv")
    site=$(dirname "$(dirname "$capi")")
    # an earlier install goes first (its folders, removed when empty, are made again below)
    if [ -f "$ROOT/$MANIFEST" ]; then uninstall "$ROOT"; fi
    put_file 755 "$bin" bin/stochseg
    for f in "$capi"/libonnxruntime*.so*; do
        put_file 755 "$f" "lib/stochseg/$(basename "$f")"
    done
    if [ -d "$site/onnxruntime_ep_openvino" ]; then
        while IFS= read -r f; do
            put_file 644 "$site/onnxruntime_ep_openvino/$f" "lib/stochseg/onnxruntime_ep_openvino/$f"
        done < <(cd "$site/onnxruntime_ep_openvino" && find . -type f ! -path '*/__pycache__/*' | sed 's|^\./||' | sort)
    fi
    for f in pipelines/*.yaml; do
        put_file 644 "$f" "share/stochseg/$f"
    done
    for f in onnx/*.onnx onnx/README.md; do
        put_file 644 "$f" "share/stochseg/$f"
    done
    put_file 644 pipelines/batch.mk share/stochseg/workflows/batch.mk
    while IFS= read -r f; do
        put_file 644 "pipelines/$f" "share/stochseg/workflows/$f"
    done < <(cd pipelines && find snakemake cwl -type f | sort)
    generated "$bin"
}

# man pages and completions, written by the binary from its own flag definitions
generated() {
    local bin=$1 tmp page
    tmp=$(mktemp -d)
    "$bin" man --out "$tmp/man" >/dev/null
    for page in "$tmp"/man/*.1; do
        put_file 644 "$page" "share/man/man1/$(basename "$page")"
    done
    "$bin" completions bash >"$tmp/bash"
    "$bin" completions zsh >"$tmp/zsh"
    "$bin" completions fish >"$tmp/fish"
    put_file 644 "$tmp/bash" share/bash-completion/completions/stochseg
    put_file 644 "$tmp/zsh" share/zsh/site-functions/_stochseg
    put_file 644 "$tmp/fish" share/fish/vendor_completions.d/stochseg.fish
    rm -rf "$tmp"
}

[ $# -ge 2 ] || die "usage: install.sh install PREFIX BIN VENV | uninstall PREFIX"
ACTION=$1
PREFIX=$2
[ -n "$PREFIX" ] || die "empty PREFIX"
ROOT=${DESTDIR:-}$PREFIX

case $ACTION in
install)
    [ $# -eq 4 ] || die "usage: install.sh install PREFIX BIN VENV"
    cd "$(dirname "$0")/.."
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    LIST=$(mktemp)
    trap 'rm -f "$LIST"' EXIT
    install_tree "$3" "$4"
    make_dir "$(dirname "$MANIFEST")"
    # folders in creation order, then files
    { grep '^d ' "$LIST" || true; grep '^f ' "$LIST"; } >"$ROOT/$MANIFEST"
    echo "installed into $ROOT ($(grep -c '^f ' "$LIST") files; manifest $MANIFEST)"
    ;;
uninstall)
    [ -d "$ROOT" ] || die "$ROOT: no such folder"
    uninstall "$ROOT"
    echo "removed the installation in $ROOT"
    ;;
*)
    die "unknown action $ACTION (install or uninstall)"
    ;;
esac
