// Package bench measures message brokers through omnibus: throughput at
// the maximum a broker sustains, and latency at fixed rates, for any
// bus.Broker.
//
// A Workload is described in OpenMessaging Benchmark's terms: message
// size, producers, consumers, partitions, batch size, producer rate (0
// for as fast as possible), warm-up and duration. Measure runs one
// repetition on a topic; a Runner repeats a workload on fresh connections
// and topics and summarises the repetitions (median and range); a Suite
// runs workloads on several brokers, derives fixed rates from each
// measured maximum, and gathers a Report with the machine, each broker's
// version and durability settings (Probe), and the client libraries.
//
// # Two kinds of run
//
// A max-rate run is a closed loop: each producer publishes its next batch
// as soon as Publish returns. Producers pause while more than
// Workload.MaxBacklog messages are unconsumed, so the figure is what the
// broker sustains end to end, not how fast a queue can grow.
//
// A fixed-rate run is an open loop: message i of a producer is due at
// start + i*interval, and it carries that due time. Publish latency and
// end-to-end latency run from it, so a Publish that stalls delays, on
// paper as in life, every message scheduled behind it; measuring from
// the actual send would record one slow message and hide the rest
// (coordinated omission). How late each Publish began is reported as the
// send delay. A producer that falls behind sends the messages already due
// together, up to the batch size.
//
// # Measurements
//
// Every message body starts with a 16-byte header: the due time in
// monotonic nanoseconds of this process, which the consumers share, so
// end-to-end latency needs no clock synchronisation and keeps nanosecond
// precision. Each producer and consumer goroutine records into its own
// HdrHistogram (github.com/HdrHistogram/hdrhistogram-go); they are merged
// at the end. Messages due during the warm-up count nowhere. After the
// window closes the consumers drain what was published, so late messages
// still count in the latencies.
//
// # Output
//
// WriteDir writes results.json (WriteJSON), summary.md (WriteMarkdown)
// and report.html (WriteHTML, a self-contained page whose own script draws
// a throughput bar chart and latency percentile curves on a log axis).
// Progress draws a progress bar on a terminal and plain lines elsewhere.
// The omnibus command (cmd/omnibus) runs all of it: omnibus bench.
package bench
