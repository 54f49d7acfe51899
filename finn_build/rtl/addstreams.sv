// addstreams: elementwise sum of two integer AXI-Streams (FINN's AddStreams, the
// residual add; our own RTL for finn_build).
//
// One beat of each input carries PE elements (element k in bits [k*IN*_BITS +: IN*_BITS],
// FINN's packing); the output beat carries the PE sums of OUT_BITS bits each. OUT_BITS
// is chosen by the Python side (AddStreams.get_output_datatype) to hold the exact sum of
// the two input ranges, so the sum never overflows; each input is sign- or zero-extended
// to OUT_BITS by its own signedness.
//
// Both inputs are consumed in lock-step: a pair is taken only when both are valid and the
// output slice has room (in0 ready needs in1 valid and vice versa, which AXI allows: a
// TREADY may depend on TVALIDs, never the other way round). The sum goes into a register
// slice (stream_skid): m_tvalid / m_tdata and the s_tready's room term are flip-flops.
module addstreams #(
	int unsigned PE        = 1,
	int unsigned IN0_BITS  = 4,
	int unsigned IN1_BITS  = 4,
	int unsigned OUT_BITS  = 5,
	bit          IN0_SIGNED = 1,
	bit          IN1_SIGNED = 1
)(
	input  logic                     clk,
	input  logic                     rst_n,

	input  logic [PE*IN0_BITS-1:0]   s0_tdata,
	input  logic                     s0_tvalid,
	output logic                     s0_tready,

	input  logic [PE*IN1_BITS-1:0]   s1_tdata,
	input  logic                     s1_tvalid,
	output logic                     s1_tready,

	output logic [PE*OUT_BITS-1:0]   m_tdata,
	output logic                     m_tvalid,
	input  logic                     m_tready
);

	logic [PE*OUT_BITS-1:0] sum;
	logic                   q_tready;

	for (genvar k = 0; k < PE; k++) begin : gen_lane
		logic [IN0_BITS-1:0] a;
		logic [IN1_BITS-1:0] b;
		logic [OUT_BITS-1:0] ax, bx;
		assign a  = s0_tdata[k*IN0_BITS +: IN0_BITS];
		assign b  = s1_tdata[k*IN1_BITS +: IN1_BITS];
		// extend each operand by its own signedness, then add modulo 2^OUT_BITS
		// (exact: OUT_BITS covers the sum's range)
		// (OUT_BITS > IN*_BITS always: the sum needs at least one bit more)
		assign ax = {{(OUT_BITS-IN0_BITS){IN0_SIGNED ? a[IN0_BITS-1] : 1'b0}}, a};
		assign bx = {{(OUT_BITS-IN1_BITS){IN1_SIGNED ? b[IN1_BITS-1] : 1'b0}}, b};
		assign sum[k*OUT_BITS +: OUT_BITS] = ax + bx;
	end

	// lock-step consumption
	assign s0_tready = q_tready && s1_tvalid;
	assign s1_tready = q_tready && s0_tvalid;

	stream_skid #(.WIDTH(PE*OUT_BITS)) u_out (
		.clk, .rst_n,
		.s_tdata(sum), .s_tvalid(s0_tvalid && s1_tvalid), .s_tready(q_tready),
		.m_tdata, .m_tvalid, .m_tready
	);

endmodule : addstreams
