# Sourced by the GPU scripts (gpu-train.sh, gpu-train-refiner.sh) from the repository root: on the
# project's GPU machine, which reaches no registry, install the carried .whl/ wheels (pyzmq), put
# the repository on the path as `streamstyle` and use the carried prompt table.
if [ -d .whl ] && ! python3 -c "import zmq" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/pyzmq*.whl
  pkg=$(mktemp -d); ln -s "$(pwd)" "$pkg/streamstyle"
  export PYTHONPATH="$pkg:/tmp/site"
  export STREAMSTYLE_PROMPT_TABLE=${STREAMSTYLE_PROMPT_TABLE:-$(pwd)/.whl/prompts.safetensors}
fi
