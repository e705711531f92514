"""GGUF surgery for error-path tests (a helper module, not a test file)."""

from __future__ import annotations

from pathlib import Path

import gguf


def drop_tensor(src: Path, dst: Path, tensor: str) -> Path:
    """Copy a GGUF without one tensor: the header is complete and consistent (our probe
    accepts it) but llama.cpp refuses the model, and gpt4all then fails *silently*
    (``GPT4All()`` returns; only ``llmodel_isModelLoaded`` tells)."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.get_field("general.architecture").contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        if t.name != tensor:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
