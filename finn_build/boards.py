"""Target boards: FPGA part and resource budget, in ONE table.

Numbers are the device totals from the Xilinx product tables (7-series DS190, Zynq
UltraScale+ DS891, Kria K26 DS987). ``bram18`` counts 18 Kb block RAM halves (one
RAMB36 = two RAMB18), which is the unit FINN's estimates use; ``uram`` counts 288 Kb
UltraRAM blocks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    family: str  # "zynq7000" | "zynquplus"
    lut: int
    ff: int
    bram18: int
    uram: int
    dsp: int
    dsp_block: str  # DSP48E1 | DSP48E2
    shell: str = "zynq_iodma"

    def budget(self) -> dict:
        return {"lut": self.lut, "ff": self.ff, "bram18": self.bram18, "uram": self.uram,
                "dsp": self.dsp}

    def to_dict(self) -> dict:
        return asdict(self)


_XC7Z020 = dict(part="xc7z020clg400-1", family="zynq7000", lut=53200, ff=106400,
                bram18=280, uram=0, dsp=220, dsp_block="DSP48E1")

BOARDS: dict[str, Board] = {
    "Pynq-Z1": Board(name="Pynq-Z1", **_XC7Z020),
    "Pynq-Z2": Board(name="Pynq-Z2", **_XC7Z020),
    "ZCU104": Board(name="ZCU104", part="xczu7ev-ffvc1156-2-e", family="zynquplus",
                    lut=230400, ff=460800, bram18=624, uram=96, dsp=1728,
                    dsp_block="DSP48E2"),
    "KV260": Board(name="KV260", part="xck26-sfvc784-2LV-c", family="zynquplus",
                   lut=117120, ff=234240, bram18=288, uram=64, dsp=1248,
                   dsp_block="DSP48E2"),
}
# accepted spellings -> canonical name
_ALIASES = {"pynq-z1": "Pynq-Z1", "pynqz1": "Pynq-Z1", "pynq-z2": "Pynq-Z2", "pynqz2": "Pynq-Z2",
            "zcu104": "ZCU104", "kv260": "KV260", "kv260_som": "KV260", "kria-kv260": "KV260"}


def get_board(name: str) -> Board:
    key = _ALIASES.get(str(name).lower().replace(" ", ""), name)
    if key not in BOARDS:
        raise KeyError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[key]
