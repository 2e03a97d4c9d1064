// Package inbound is the receive side shared by the raftbus buses: it checks
// the subject of each inbound frame, splits the frame into payloads and hands
// them, or the reason they were dropped, to the bus.Receiver.
//
// A Handler is owned by the bus's single delivery goroutine and is not safe
// for concurrent use; that is what makes the Receiver's calls sequential.
package inbound
