// stream_skid: two-entry AXI-Stream register slice ("skid buffer").
//
// Our own helper for finn_build's RTL layers (finn_build/rtl). It cuts every
// combinational path between its two sides: s_tready, m_tvalid and m_tdata
// are all driven by flip-flops, so whatever drives m_tready (e.g. a fork that
// ANDs several consumers' TREADY) never reaches s_tready in the same cycle.
// Full throughput: one beat per cycle in steady state; one cycle of latency.
//
//   main register  : the beat offered on m_*
//   skid register  : catches the beat accepted in the cycle the consumer
//                    stopped (s_tready is the registered "skid empty" flag)
module stream_skid #(
	int unsigned WIDTH = 8
)(
	input  logic             clk,
	input  logic             rst_n,

	input  logic [WIDTH-1:0] s_tdata,
	input  logic             s_tvalid,
	output logic             s_tready,

	output logic [WIDTH-1:0] m_tdata,
	output logic             m_tvalid,
	input  logic             m_tready
);

	logic [WIDTH-1:0] main_data, skid_data;
	logic             main_full, skid_full;

	assign s_tready = !skid_full;
	assign m_tvalid = main_full;
	assign m_tdata  = main_data;

	always_ff @(posedge clk) begin
		if (!rst_n) begin
			main_full <= 1'b0;
			skid_full <= 1'b0;
			main_data <= '0;
			skid_data <= '0;
		end
		else begin
			// main register drains or is empty: refill from skid first, else input
			if (!main_full || m_tready) begin
				if (skid_full) begin
					main_data <= skid_data;
					main_full <= 1'b1;
					skid_full <= 1'b0;
				end
				else begin
					main_data <= s_tdata;
					main_full <= s_tvalid;
				end
			end
			// main register held (consumer stalled) while a beat is accepted: park it
			else if (s_tvalid && !skid_full) begin
				skid_data <= s_tdata;
				skid_full <= 1'b1;
			end
		end
	end

endmodule : stream_skid
