"""Every file the suite reads or writes: checkpoint folders (checkpoint), weights coming in from a checkpoint, a
state dict or a sparse file (weights), the compressed sparse file (sparse_file), and under all of them the one
loader of pickles that never runs code from a file (safe_pickle)."""
