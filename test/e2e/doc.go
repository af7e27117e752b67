// Package e2e holds the process-level end-to-end tests of smdelegate: they
// build the real smd binary once, run managers and agents as separate
// processes on real sockets (127.0.0.1 only), and drive them the way an
// operator or platform code would: the smd CLI, the manager's gRPC API,
// /metrics, and signals (SIGTERM, SIGSTOP, SIGKILL).
//
// Run them with
//
//	go test -count=1 ./test/e2e/
//
// They are skipped with -short. Set SMD_E2E_RACE=1 to build the binary
// with the race detector; any "DATA RACE" or Go panic in a process log
// fails the test that started the process.
package e2e
