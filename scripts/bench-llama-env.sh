#!/usr/bin/env bash
# The bench-only environment for the llama.cpp row of `whence-ls bench generate`: builds
# llama-cpp-python from source (PyPI sdist, CPU, native instructions; ~10-20 min on 2 cores),
# converts the embedded model to an F32 GGUF with the converter in that same sdist, and
# quantises it to F16, Q8_0 and Q4_K_M with llama.cpp's own quantiser. Nothing of this is needed to
# use or test whence-ls; it is only the speed anchor.
#
#   scripts/bench-llama-env.sh [DIR]        (default DIR: bench-llama/ beside the repository)
#   then: whence-ls bench generate --gguf DIR/smollm2-135m-instruct-f32.gguf --llama-python DIR/venv/bin/python
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

DIR="$(mkdir -p "${1:-$REPO/../bench-llama}" && cd "${1:-$REPO/../bench-llama}" && pwd)"
LLAMA_PY="$DIR/venv/bin/python"
ensure_venv
ensure_torch
"$VENV/bin/whence-ls" --version >/dev/null 2>&1 || ensure_project ""
ensure_model

if ! "$LLAMA_PY" -c "import llama_cpp" 2>/dev/null; then
  say "building llama-cpp-python from source in $DIR/venv"
  "$(pick_python)" -m venv "$DIR/venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$LLAMA_PY" -m pip install --no-cache-dir llama-cpp-python
fi
VERSION="$("$LLAMA_PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"

F32="$DIR/smollm2-135m-instruct-f32.gguf"
if [ ! -f "$F32" ]; then
  say "converting the embedded model to $F32 (llama.cpp's converter from llama-cpp-python $VERSION)"
  "$LLAMA_PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR/sdist"
  tar xzf "$DIR/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$DIR/sdist"
  # the converter needs torch and transformers (ours) and sentencepiece (only a bench need)
  "$PY" -m pip install --quiet sentencepiece
  MODEL="$("$PY" -c 'from whence_ls.engine import registry; print(registry.installed_entry(registry.DEFAULT_MODEL)["path"])')"
  "$PY" "$DIR/sdist/llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" "$MODEL" --outtype f32 --outfile "$F32"
fi

for kind in F16 Q8_0 Q4_K_M; do
  out="$DIR/smollm2-135m-instruct-$(echo "$kind" | tr 'A-Z' 'a-z').gguf"
  if [ ! -f "$out" ]; then
    say "quantising to $out"
    "$LLAMA_PY" - "$F32" "$out" "$kind" <<'PY'
import ctypes, sys
import llama_cpp

source, target, kind = sys.argv[1:4]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = {"F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[kind]
rc = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
sys.exit(rc)
PY
  fi
done
say "ready: whence-ls bench generate --gguf $F32 --llama-python $LLAMA_PY"
