// globalaccpool: per-channel sum over all spatial positions (FINN's GlobalAccPool; our
// own RTL for finn_build). The division by the map size is not done here (FINN keeps it
// downstream, as a Mul).
//
// Input: for each of NPIX pixels, FOLD = channels / PE beats of PE elements (IN_BITS
// each, FINN's packing: channel f*PE + k in lane k of beat f). Output: FOLD beats of PE
// sums of OUT_BITS each, after the last pixel. OUT_BITS comes from the Python side
// (GlobalAccPool.get_output_datatype: NPIX * the extreme input value fits), so the
// accumulators never overflow; inputs are sign- or zero-extended (IN_SIGNED).
//
// One beat per cycle: accumulator row f (PE x OUT_BITS, a small register array) is read
// and rewritten in the cycle beat f arrives; at the first pixel the row is loaded with the
// input (no clearing pass between images); at the last pixel the sum is sent to the output
// register slice instead of being stored, so the next image can follow without a gap.
// During the last pixel the input waits for the output slice (s_tready = its room);
// otherwise s_tready is 1.
module globalaccpool #(
	int unsigned PE        = 1,
	int unsigned FOLD      = 1,   // channels / PE
	int unsigned NPIX      = 1,   // spatial positions summed (H * W)
	int unsigned IN_BITS   = 4,
	int unsigned OUT_BITS  = 8,
	bit          IN_SIGNED = 1
)(
	input  logic                     clk,
	input  logic                     rst_n,

	input  logic [PE*IN_BITS-1:0]    s_tdata,
	input  logic                     s_tvalid,
	output logic                     s_tready,

	output logic [PE*OUT_BITS-1:0]   m_tdata,
	output logic                     m_tvalid,
	input  logic                     m_tready
);

	localparam int unsigned FB = FOLD > 1 ? $clog2(FOLD) : 1;
	localparam int unsigned PB = NPIX > 1 ? $clog2(NPIX) : 1;

	logic [PE*OUT_BITS-1:0] acc [FOLD];   // accumulator rows
	logic [FB-1:0]          fold_cnt;     // channel group of the current beat
	logic [PB-1:0]          pix_cnt;      // pixel of the current beat
	logic                   first_pix, last_pix;
	logic [PE*OUT_BITS-1:0] row_new;      // acc row + input beat
	logic                   q_tready;     // output slice has room
	logic                   take;

	assign first_pix = (pix_cnt == '0);
	assign last_pix  = (pix_cnt == PB'(NPIX-1));

	for (genvar k = 0; k < PE; k++) begin : gen_lane
		logic [IN_BITS-1:0]  x;
		logic [OUT_BITS-1:0] xx, old;
		assign x   = s_tdata[k*IN_BITS +: IN_BITS];
		if (OUT_BITS > IN_BITS) begin : gen_ext  // sign- or zero-extend to OUT_BITS
			assign xx = {{(OUT_BITS-IN_BITS){IN_SIGNED ? x[IN_BITS-1] : 1'b0}}, x};
		end
		else begin : gen_same                    // one pixel: the type may not grow
			assign xx = x;
		end
		assign old = first_pix ? '0 : acc[fold_cnt][k*OUT_BITS +: OUT_BITS];
		assign row_new[k*OUT_BITS +: OUT_BITS] = old + xx;
	end

	assign s_tready = last_pix ? q_tready : 1'b1;
	assign take     = s_tvalid && s_tready;

	always_ff @(posedge clk) begin
		if (!rst_n) begin
			fold_cnt <= '0;
			pix_cnt  <= '0;
		end
		else if (take) begin
			if (fold_cnt == FB'(FOLD-1)) begin
				fold_cnt <= '0;
				pix_cnt  <= last_pix ? '0 : pix_cnt + 1'b1;
			end
			else fold_cnt <= fold_cnt + 1'b1;
		end
	end

	// accumulator rows (no reset needed: the first pixel overwrites them)
	always_ff @(posedge clk) begin
		if (take && !last_pix) acc[fold_cnt] <= row_new;
	end

	stream_skid #(.WIDTH(PE*OUT_BITS)) u_out (
		.clk, .rst_n,
		.s_tdata(row_new), .s_tvalid(s_tvalid && last_pix), .s_tready(q_tready),
		.m_tdata, .m_tvalid, .m_tready
	);

endmodule : globalaccpool
