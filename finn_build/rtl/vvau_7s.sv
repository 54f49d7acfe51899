// Depthwise convolution unit (FINN's VVAU, no embedded activation) for 7-series parts:
// multipliers in LUTs or DSP48E1 slices (MUL_STYLE), weights in a ROM initialised by
// $readmemh, AXI-Stream in and out.
// Written for finn_build (finn_build/layers/vvau.py generates the wrapper and the .dat).
//
// Input stream (what FINN's ConvolutionInputGenerator produces in depthwise mode, the
// layout VVAU.execute_node untangles): per output pixel NF = CHANNELS/PE channel folds,
// each with SF = KERNEL/SIMD beats; one beat carries SIMD kernel taps x PE channels,
// element (s, p) at bits [(s*PE + p)*ACTIVATION_WIDTH +: ACTIVATION_WIDTH], i.e. tap
// nf-fold tap sf*SIMD + s of channel nf*PE + p.
// Weights: ROM word nf*SF + sf holds PE x SIMD weights, (p, s) at bits
// [(p*SIMD + s)*WEIGHT_WIDTH +: WEIGHT_WIDTH] (weight of channel nf*PE + p, tap sf*SIMD + s).
// Output stream: one beat per (pixel, nf): PE accumulators, lane p at
// [p*ACCU_WIDTH +: ACCU_WIDTH] (channel nf*PE + p), sign-extended to a byte multiple.
//
// Pipeline (never stalls internally; bubbles when the input has none):
//   edge 1: input beat + ROM word registered   edge 2: products (LUTs or DSP48E1)
//   edge 3: per-PE balanced adder tree          edge 4: accumulate; last tap -> output queue
// Flow control by credit: an input beat that completes an output (last of its SF beats)
// is accepted only while fewer than QDEPTH outputs are pending (in the pipeline or the
// queue), so the queue never overflows and TREADY is a function of registers only
// (no combinational path from m_axis_tready to s_axis_tready). One beat per cycle when
// the output is not back-pressured. Arithmetic is modulo 2^ACCU_WIDTH: exact for every
// result that fits the accumulator type (FINN sizes it from the weights).
//
// MUL_STYLE "dsp": products with '*' on DSP48E1 slices. Where the operands allow
// (PACK_PAIRS below), two taps of one channel share a slice: with K = product width + 1,
//   (a0 + a1*2^K) * (w1 + w0*2^K) = a0*w1 + (a0*w0 + a1*w1)*2^K + a1*w0*2^(2K),
// the middle field is the two taps' dot product; a negative low term a0*w1 borrows one
// from it, which bit K-1 (the low term's sign) gives back. A single product narrower than
// 9 bits stays in LUTs (yosys' synth_xilinx maps '*' to a DSP48E1 from 9 result bits).
module vvau_7s #(
	int unsigned  PE = 1,
	int unsigned  SIMD = 1,
	int unsigned  CHANNELS = 1,
	int unsigned  KERNEL = 1,			// k_h * k_w
	int unsigned  ACTIVATION_WIDTH = 4,
	bit           SIGNED_ACTIVATIONS = 0,
	int unsigned  WEIGHT_WIDTH = 4,
	bit           SIGNED_WEIGHTS = 1,
	int unsigned  ACCU_WIDTH = 16,
	parameter     WEIGHT_FILE = "",
	parameter     RAM_STYLE = "distributed",	// weight ROM: "distributed" (LUTs) | "block"
	parameter     MUL_STYLE = "lut",		// multipliers: "lut" | "dsp" (DSP48E1)
	localparam int unsigned  IN_WIDTH = PE*SIMD*ACTIVATION_WIDTH,
	localparam int unsigned  IN_WIDTH_BA = (IN_WIDTH+7)/8*8,
	localparam int unsigned  OUT_WIDTH = PE*ACCU_WIDTH,
	localparam int unsigned  OUT_WIDTH_BA = (OUT_WIDTH+7)/8*8
)(
	input	logic  ap_clk,
	input	logic  ap_rst_n,

	input	logic [IN_WIDTH_BA-1:0]  s_axis_tdata,
	input	logic  s_axis_tvalid,
	output	logic  s_axis_tready,

	output	logic [OUT_WIDTH_BA-1:0]  m_axis_tdata,
	output	logic  m_axis_tvalid,
	input	logic  m_axis_tready
);
	localparam int unsigned  SF = KERNEL/SIMD;
	localparam int unsigned  NF = CHANNELS/PE;
	localparam int unsigned  WMEM = SF*NF;
	localparam int unsigned  ADDR_BITS = WMEM > 1? $clog2(WMEM) : 1;
	localparam int unsigned  SF_BITS = SF > 1? $clog2(SF) : 1;
	// operands as signed numbers (an unsigned operand gains a zero sign bit)
	localparam int unsigned  AX = ACTIVATION_WIDTH + (SIGNED_ACTIVATIONS? 0 : 1);
	localparam int unsigned  WX = WEIGHT_WIDTH + (SIGNED_WEIGHTS? 0 : 1);
	localparam int unsigned  PW = AX + WX;					// product width
	localparam int unsigned  TW = PW + (SIMD > 1? $clog2(SIMD) : 0);	// adder tree width
	// DSP mode: a pair of taps per DSP48E1 (25 x 18 signed multiplier) when both packed
	// operands fit it; a lone product (odd SIMD, or no packing) on a DSP48E1 from 9 bits
	localparam bit  MUL_DSP = MUL_STYLE == "dsp";
	localparam int unsigned  K = PW + 1;					// field of a pair's dot product
	// packed operand widths: a1*2^K + a0 needs one bit more than AX + K when a0 can be
	// negative (a1 = its minimum, a0 < 0); likewise the weights
	localparam int unsigned  PA = AX + K + (SIGNED_ACTIVATIONS? 1 : 0);
	localparam int unsigned  PB = WX + K + (SIGNED_WEIGHTS? 1 : 0);
	localparam bit  PACK_PAIRS = MUL_DSP && SIMD > 1 &&
		((PA <= 25 && PB <= 18) || (PA <= 18 && PB <= 25));
	localparam int unsigned  NPAIR = PACK_PAIRS? SIMD/2 : 0;
	localparam int unsigned  NT = SIMD - NPAIR;				// adder-tree leaves per PE
	localparam bit  SINGLE_DSP = MUL_DSP && PW >= 9;
	localparam int unsigned  QDEPTH = 8;					// output queue (>= 5 for full rate)
	localparam int unsigned  QA = $clog2(QDEPTH);

	initial begin
		if (KERNEL % SIMD != 0) $error("%m: KERNEL (%0d) is not a multiple of SIMD (%0d)", KERNEL, SIMD);
		if (CHANNELS % PE != 0) $error("%m: CHANNELS (%0d) is not a multiple of PE (%0d)", CHANNELS, PE);
		if (MUL_STYLE != "lut" && MUL_STYLE != "dsp") $error("%m: MUL_STYLE must be \"lut\" or \"dsp\"");
	end

	uwire  rst = !ap_rst_n;

	typedef logic [SIMD-1:0][PE-1:0][ACTIVATION_WIDTH-1:0]  act_t;
	typedef logic [PE-1:0][SIMD-1:0][WEIGHT_WIDTH-1:0]  wgt_t;
	typedef logic [PE-1:0][ACCU_WIDTH-1:0]  out_t;

	//- Weight ROM (read registered into W1, stage 1) ---------------------------
	// "block" forces a block RAM; otherwise no attribute: Vivado maps a small ROM to
	// LUTs by default, yosys to logic (its LUTRAM mapping needs a write port, so a forced
	// "distributed" would not map there).
	logic [ADDR_BITS-1:0]  Addr = 0;	// ROM word of the next beat (nf*SF + sf)
	wgt_t  W1;
	if (RAM_STYLE == "block") begin : genBlockRom
		(* rom_style = "block", ram_style = "block" *)
		wgt_t  Mem[WMEM];
		initial begin
			if (WEIGHT_FILE != "")  $readmemh(WEIGHT_FILE, Mem);
		end
		always_ff @(posedge ap_clk)  W1 <= Mem[Addr];
	end : genBlockRom
	else begin : genLutRom
		wgt_t  Mem[WMEM];
		initial begin
			if (WEIGHT_FILE != "")  $readmemh(WEIGHT_FILE, Mem);
		end
		always_ff @(posedge ap_clk)  W1 <= Mem[Addr];
	end : genLutRom

	//- Input side: fold counters and credits ---------------------------------
	logic [SF_BITS-1:0]    Sf = 0;		// tap fold of the next beat
	logic [QA:0]           Pending = 0;	// outputs owed: accepted last beats not yet sent
	uwire  first = Sf == 0;
	uwire  last = Sf == SF_BITS'(SF-1);
	uwire  pop = m_axis_tvalid && m_axis_tready;
	assign	s_axis_tready = !last || (Pending < QDEPTH);
	uwire  accept = s_axis_tvalid && s_axis_tready;

	always_ff @(posedge ap_clk) begin
		if (rst) begin
			Sf <= 0;
			Addr <= 0;
			Pending <= 0;
		end
		else begin
			if (accept) begin
				Sf <= last? 0 : Sf + 1;
				Addr <= (Addr == ADDR_BITS'(WMEM-1))? 0 : Addr + 1;
			end
			Pending <= Pending + (accept && last) - pop;
		end
	end

	//- Stage 1: registered beat and weight word ------------------------------
	logic  V1 = 0;
	logic  F1, L1;
	act_t  A1;
	always_ff @(posedge ap_clk) begin
		V1 <= rst? 0 : accept;
		if (accept) begin
			A1 <= act_t'(s_axis_tdata[IN_WIDTH-1:0]);
			F1 <= first;
			L1 <= last;
		end
	end

	//- Stage 2: products -------------------------------------------------------
	// LUTs: an explicit sum of shifted partial products, not '*': synthesis (yosys maps a
	// '*' of >= 9 result bits to a DSP48E1) builds adders in LUTs + carry chains. The NPP
	// partial products (one per bit of the narrower operand; its sign bit's is subtracted)
	// are added in a balanced tree: ceil(log2 NPP) adder levels (3 for 8 bits), not a chain.
	localparam int unsigned  NPP = WX <= AX? WX : AX;
	function automatic logic signed [PW-1:0] mul(
		input logic signed [AX-1:0]  a, input logic signed [WX-1:0]  w
	);
		logic signed [PW-1:0]  pp[NPP];
		for (int i = 0; i < NPP; i++) begin
			automatic logic  sel = WX <= AX? w[i] : a[i];
			automatic logic signed [PW-1:0]  x = WX <= AX? PW'(a) : PW'(w);
			pp[i] = !sel? 0 : (i == NPP-1)? -(x <<< i) : (x <<< i);
		end
		for (int step = 1; step < NPP; step *= 2)
			for (int i = 0; i + step < NPP; i += 2*step)  pp[i] += pp[i+step];
		return  pp[0];
	endfunction : mul

	logic  V2 = 0;
	logic  F2, L2;
	always_ff @(posedge ap_clk) begin
		V2 <= rst? 0 : V1;
		F2 <= F1;
		L2 <= L1;
	end
	// leaf[p][t]: term t of PE p's sum (a product, or a DSP pair's dot product), decoded
	// from the stage-2 registers
	uwire signed [K-1:0]  leaf[PE][NT];
	for (genvar p = 0; p < PE; p++) begin : genPE
		uwire signed [AX-1:0]  a[SIMD];
		uwire signed [WX-1:0]  w[SIMD];
		for (genvar s = 0; s < SIMD; s++) begin : genOperands
			if (SIGNED_ACTIVATIONS) begin : genSA  assign  a[s] = A1[s][p];  end : genSA
			else begin : genUA  assign  a[s] = {1'b0, A1[s][p]};  end : genUA
			if (SIGNED_WEIGHTS) begin : genSW  assign  w[s] = W1[p][s];  end : genSW
			else begin : genUW  assign  w[s] = {1'b0, W1[p][s]};  end : genUW
		end : genOperands
		for (genvar j = 0; j < NPAIR; j++) begin : genPair
			uwire signed [PA-1:0]  pa = PA'(a[2*j]) + (PA'(a[2*j+1]) <<< K);
			uwire signed [PB-1:0]  pb = PB'(w[2*j+1]) + (PB'(w[2*j]) <<< K);
			(* use_dsp = "yes" *)
			logic signed [2*K-1:0]  R2;	// the product's low 2K bits
			always_ff @(posedge ap_clk)  R2 <= pa * pb;
			assign	leaf[p][j] = $signed(R2[2*K-1:K]) + $signed({1'b0, R2[K-1]});
		end : genPair
		for (genvar s = 2*NPAIR; s < SIMD; s++) begin : genSingle
			logic signed [PW-1:0]  M2;
			if (SINGLE_DSP) begin : genDsp
				(* use_dsp = "yes" *)
				logic signed [PW-1:0]  R2;
				always_ff @(posedge ap_clk)  R2 <= a[s] * w[s];
				assign	M2 = R2;
			end : genDsp
			else begin : genLut
				always_ff @(posedge ap_clk)  M2 <= mul(a[s], w[s]);
			end : genLut
			assign	leaf[p][NPAIR + s - 2*NPAIR] = K'(M2);
		end : genSingle
	end : genPE

	//- Stage 3: balanced adder tree per PE (heap: node i = 2i+1 + 2i+2) ------
	logic  V3 = 0;
	logic  F3, L3;
	uwire signed [TW-1:0]  sum[PE];
	logic signed [TW-1:0]  S3[PE];
	for (genvar p = 0; p < PE; p++) begin : genTree
		uwire signed [TW-1:0]  t[2*NT-1] /* verilator split_var */;
		for (genvar i = 0; i < NT; i++) begin : genLeaf
			assign	t[NT-1+i] = TW'(leaf[p][i]);
		end : genLeaf
		for (genvar i = 0; i < NT-1; i++) begin : genNode
			assign	t[i] = t[2*i+1] + t[2*i+2];
		end : genNode
		assign	sum[p] = t[0];
	end : genTree
	always_ff @(posedge ap_clk) begin
		S3 <= sum;
		V3 <= rst? 0 : V2;
		F3 <= F2;
		L3 <= L2;
	end

	//- Stage 4: accumulate; the last tap fold of a channel fold is pushed ------
	out_t  Acc;
	out_t  acc_next;
	for (genvar p = 0; p < PE; p++) begin : genAcc
		uwire [ACCU_WIDTH-1:0]  addend;
		if (ACCU_WIDTH > TW) begin : genExt
			assign	addend = {{(ACCU_WIDTH-TW){S3[p][TW-1]}}, S3[p]};
		end : genExt
		else begin : genTrunc
			assign	addend = S3[p][ACCU_WIDTH-1:0];
		end : genTrunc
		assign	acc_next[p] = (F3? ACCU_WIDTH'(0) : Acc[p]) + addend;
	end : genAcc
	uwire  push = V3 && L3;
	always_ff @(posedge ap_clk) begin
		if (V3)  Acc <= acc_next;
	end

	//- Output queue (distributed RAM, asynchronous read) ------------------------
	(* ram_style = "distributed" *)
	out_t  QMem[QDEPTH];
	logic [QA-1:0]  WPtr = 0;
	logic [QA-1:0]  RPtr = 0;
	logic [QA:0]    Count = 0;
	always_ff @(posedge ap_clk) begin
		if (push)  QMem[WPtr] <= acc_next;
	end
	always_ff @(posedge ap_clk) begin
		if (rst) begin
			WPtr <= 0;
			RPtr <= 0;
			Count <= 0;
		end
		else begin
			WPtr <= WPtr + QA'(push);
			RPtr <= RPtr + QA'(pop);
			Count <= Count + push - pop;
		end
	end
	uwire out_t  odat = QMem[RPtr];
	assign	m_axis_tvalid = Count != 0;
	if (OUT_WIDTH_BA > OUT_WIDTH) begin : genPad
		assign	m_axis_tdata = {{(OUT_WIDTH_BA-OUT_WIDTH){odat[PE-1][ACCU_WIDTH-1]}}, odat};
	end : genPad
	else begin : genNoPad
		assign	m_axis_tdata = odat;
	end : genNoPad

endmodule : vvau_7s
