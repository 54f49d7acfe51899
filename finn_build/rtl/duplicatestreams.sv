// duplicatestreams: AXI-Stream fork, one input stream to N_OUT identical output streams
// (FINN's DuplicateStreams; our own RTL for finn_build).
//
// Every input beat (PE lanes of ELEM_BITS bits, packed in WIDTH = PE * ELEM_BITS bits;
// the lanes are only copied, so the core sees one WIDTH-bit word) is delivered to every
// output exactly once, at each output's own pace:
//
//   - the input passes a register slice (stream_skid) so that s_tready is a flip-flop:
//     no combinational path from any m_tready to s_tready;
//   - per output a "taken" flag records that this output has already accepted the
//     current beat; m_tvalid[i] = beat valid AND NOT taken[i], so no output sees a beat
//     twice while it waits for the others;
//   - the beat is retired (and the next one presented) in the cycle in which every
//     output has either taken it before or takes it now; the flags are then cleared.
//
// A stalled branch therefore holds the fork (and, through the slice, the producer) but
// never loses or duplicates a beat on the other branch.
module duplicatestreams #(
	int unsigned WIDTH = 8,   // PE * element bits
	int unsigned N_OUT = 2    // number of output streams (>= 1)
)(
	input  logic                       clk,
	input  logic                       rst_n,

	input  logic [WIDTH-1:0]           s_tdata,
	input  logic                       s_tvalid,
	output logic                       s_tready,

	output logic [N_OUT-1:0][WIDTH-1:0] m_tdata,
	output logic [N_OUT-1:0]           m_tvalid,
	input  logic [N_OUT-1:0]           m_tready
);

	// input register slice
	logic [WIDTH-1:0] b_tdata;
	logic             b_tvalid;
	logic             b_tready;
	stream_skid #(.WIDTH(WIDTH)) u_in (
		.clk, .rst_n,
		.s_tdata, .s_tvalid, .s_tready,
		.m_tdata(b_tdata), .m_tvalid(b_tvalid), .m_tready(b_tready)
	);

	// per-output "already taken" flags of the current beat
	logic [N_OUT-1:0] taken;
	logic [N_OUT-1:0] done;   // taken before or now

	assign m_tvalid = {N_OUT{b_tvalid}} & ~taken;
	assign done     = taken | (m_tvalid & m_tready);
	assign b_tready = &done;  // retire the beat once every output has it

	for (genvar i = 0; i < N_OUT; i++) begin : gen_out
		assign m_tdata[i] = b_tdata;
	end

	always_ff @(posedge clk) begin
		if (!rst_n)                taken <= '0;
		else if (b_tvalid && b_tready) taken <= '0;      // beat retired: fresh flags
		else if (b_tvalid)         taken <= done;        // remember who has it
	end

endmodule : duplicatestreams
