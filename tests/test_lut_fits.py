"""finn_build.layers.lut_fits: the structure of the MVU / thresholding LUT models (no yosys,
no FINN: plain arithmetic on layer parameters)."""
from __future__ import annotations

import pytest

from finn_build.layers import lut_fits as LF

# the demo MLP's second layer and a 2-bit one of benchmarks/bench_layers.py's grid
MVAU = dict(pe=8, simd=4, mw=64, mh=32, w_bits=2, a_bits=2, acc=8, narrow=True,
            ram_style="distributed", mem_mode="internal_decoupled")


def mvau(**kw):
    return LF.mvau_lut_of(**{**MVAU, **kw})


def test_lanes_follow_mvu_sv():
    assert LF.mvu_lanes(4, 4, True, "DSP48E1") == 4
    assert LF.mvu_lanes(4, 8, True, "DSP48E1") == 2
    assert LF.mvu_lanes(8, 8, True, "DSP48E1") == 2
    assert LF.mvu_lanes(2, 2, True, "DSP48E1") == 8
    assert LF.mvu_lanes(4, 4, True, "DSP58") == 0  # not packed: finn-plus estimates it


def test_lane_widths_fill_the_a_port_and_end_at_the_accumulator():
    # 2-bit x 2-bit, 8 lanes: 3-bit lanes, the 2 bits of slack on the lowest two
    assert LF.lane_widths(8, 2, 2, 8, True) == [4, 4, 3, 3, 3, 3, 3, 8]
    assert LF.lane_widths(2, 4, 8, 20, True) == [21, 20]


def test_mvau_hand_count():
    t = LF.mvau_terms(8, 4, 64, 32, 2, 2, 8, True)
    # one pipeline of 8 lanes: 7 cross-lane instances per SIMD element; trees: 3 adders of
    # (lane width + log2(4) + 2) bits per lane
    assert t == {"lanes": 8, "pipes": 1, "xlane": 28, "tree": 3 * (4 + 4 + 5 * 3 + 8 + 8 * 4),
                 "acc": 64, "wstream": 64}
    m = LF.mvau_memory(8, 4, 64, 32, 2, 2, "distributed", "internal_decoupled")
    # weights 64 words x 64 bits: a LUT per bit; replay 16 words x 8 bits: 2 RAM32M
    assert m == {"weights": 64, "replay": 8.0}
    expected = (LF.K_XLANE * 28 + LF.K_TREE * 189 + LF.K_ACC * 64 + LF.K_WSTREAM * 64
                + 64 + 8)
    assert mvau() == pytest.approx(expected)
    # the constants of the fit: 926.6 LUTs here, yosys synthesized 910 (at d2efa76)
    assert mvau() == pytest.approx(926.6, abs=1)


def test_mvau_fit_matches_the_committed_yosys_records():
    """Every MVAU_rtl record of bench-layers within 13% of yosys (a record whose distributed
    weights yosys put into BRAM, from before bench-layers synthesized them with -nobram:
    the model counts the LUTRAM asked for, so it must be above)."""
    import json
    from pathlib import Path

    from qonnx.core.datatype import DataType

    recs = [r for r in json.loads(Path("benchmarks/results/layers.json").read_text())["records"]
            if r["op_type"] == "MVAU_rtl"]
    assert len(recs) >= 9
    for r in recs:
        c = r["config"]
        mw, mh = c["shape"]
        bits = [DataType[c[k]].bitwidth() for k in ("wdt", "idt", "odt")]
        est = LF.mvau_lut_of(c["pe"], c["simd"], mw, mh, *bits, True, c["ram_style"],
                             c["mem_mode"])
        if r["yosys"]["bram36"] and c["ram_style"] == "distributed":
            assert est > r["yosys"]["lut"]
            continue
        assert abs(est / r["yosys"]["lut"] - 1) <= 0.13, (c, est, r["yosys"]["lut"])


def test_mvau_monotone_in_folding_and_widths():
    base = mvau()
    assert mvau(pe=16) > base and mvau(pe=32) > mvau(pe=16)
    assert mvau(simd=8) > base and mvau(simd=16) > mvau(simd=8)
    assert mvau(w_bits=4) > base and mvau(w_bits=8) > mvau(w_bits=4)
    assert mvau(a_bits=4) > base and mvau(a_bits=8) > mvau(a_bits=4)
    assert mvau(acc=16) > base


def test_mvau_weights_in_bram_cost_no_lutram():
    dist, block = mvau(), mvau(ram_style="block")
    assert dist - block == 64
    assert mvau(mem_mode="external", ram_style="distributed") == block


def test_thresholding_hand_count_and_bram_stages():
    # 16 channels on 4 PEs (4 per PE), 15 steps (4 stages), 15-bit inputs
    t = LF.thresholding_terms(4, 16, 15, 15)
    assert t == {"rom": 4 * 15 * (4 + 8 + 16 + 32) / 64, "cmp": 4 * 4 * 15, "stages": 4}
    assert LF.thresholding_lut_of(4, 16, 15, 15) == pytest.approx(
        LF.K_ROM * 56.25 + LF.K_CMP * 240)
    # a 2048 x 16-bit stage went into BRAM: not in the ROM term
    assert LF.thresholding_terms(1, 16, 255, 16)["rom"] == 16 * (16 + 32 + 64 + 128 + 256
                                                               + 512) / 64


def test_thresholding_monotone():
    base = LF.thresholding_lut_of(1, 16, 15, 16)
    assert LF.thresholding_lut_of(2, 16, 15, 16) > base
    assert LF.thresholding_lut_of(1, 16, 15, 20) > base
    assert LF.thresholding_lut_of(1, 16, 3, 16) < base
    # not monotone where a stage crosses into BRAM: 64 channels, the 512-word stage has
    # 8192 bits at 16-bit inputs (LUTs), 10240 at 20 bits (BRAM, as yosys did)
    assert LF.thresholding_lut_of(1, 64, 15, 20) < LF.thresholding_lut_of(1, 64, 15, 16)


def test_lutram_packing():
    assert LF.lutram(1, 64) == 0
    assert LF.lutram(6, 288) == 4 * 48        # RAM32M: 6 bits in 4 LUTs
    assert LF.lutram(64, 4, dual_port=True) == 8  # RAM64M: 3 bits in 4 LUTs
    assert LF.lutram(128, 128) == 256         # a LUT per 64 words per bit


def test_dwc_picks_vpc_sv_structure_from_the_widths():
    assert LF.dwc_lut_of(64, 64) == 0  # genWire
    # serializer 448 -> 14: a LUT per buffer bit + the 14-bit output mux + 5-bit counter
    assert LF.dwc_lut_of(448, 14) == 448 + 14 + 5 + LF.K_DWC_COUNT
    # deserializer 4 -> 64: the buffer only shifts; the last word's mux + 4-bit counter
    assert LF.dwc_lut_of(4, 64) == 4 + 4 + LF.K_DWC_COUNT
    # generic 64 -> 12: words of gcd 4 bits, 16 in, 3 out
    assert LF.dwc_lut_of(64, 12) == pytest.approx(
        LF.K_DWC_BUF * 19 * 4 + LF.K_DWC_ROT * 16 * 16 * 4 + LF.K_DWC_CTRL)


def test_dwc_down_costs_the_wide_side_up_costs_little():
    assert LF.dwc_lut_of(1280, 20) > 1280 > 20 * LF.dwc_lut_of(8, 256) / 16
    assert LF.dwc_lut_of(8, 256) < 20
    # the rotators grow with the input words per beat
    assert LF.dwc_lut_of(64, 12) > LF.dwc_lut_of(36, 8) > LF.dwc_lut_of(20, 12)


def test_swg_buffer_lutram_and_read_mux():
    assert LF.swg_buffer_lut(27, 24) == 16            # RAM32M: 6 bits in 4 LUTs
    assert LF.swg_buffer_lut(34, 64) == 88            # RAM64M: 3 bits in 4 LUTs
    # 192 words x 64 bits: 3 slices of RAM64M + a 3:1 read mux (2 LUTs per bit)
    assert LF.swg_buffer_lut(192, 64) == 3 * 88 + 2 * 64
    assert LF.swg_lut_of(16, 4, [34]) == LF.K_SWG_CTRL + 88
    assert LF.swg_lut_of(16, 4, [27, 27]) == LF.K_SWG_CTRL + 2 * 44  # parallel: 2 lines
    assert LF.swg_lut_of(16, 4, [192], ram_style="block") == LF.K_SWG_CTRL


def test_fmpadding_one_lut_per_stream_bit():
    assert LF.fmpadding_lut_of(32, 4) == 128 + LF.K_FMP_CTRL
    assert LF.fmpadding_lut_of(3, 8) == 24 + LF.K_FMP_CTRL
    assert LF.fmpadding_lut_of(3, 5) == 16 + LF.K_FMP_CTRL  # AXI width: a byte multiple
