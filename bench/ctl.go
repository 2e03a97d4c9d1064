package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The control protocol between the parent (load generator) and a node
// child: length-prefixed frames over loopback TCP, one request in flight per
// connection, so a client is exactly one connection.
//
//	frame    = length(uint32 BE) body{length}
//	put      = 0x01 keylen(uint16 BE) key value          (request)
//	           status(1) index(uint64 BE) nanos(uint64 BE) [error text]  (response)
//	status   = 0x02                                       (request)
//	           JSON ctlStatus                             (response)
//
// It exists, instead of driving the kv HTTP API, because on two cores the
// load generator and the leader share the CPU with the Raft processes: a
// request here costs a few microseconds of parsing on each side, an HTTP
// request tens, which would be charged to neither transport yet slow both.
// The node side still runs the exact proposal path of the HTTP API:
// kv.EncodePut then node.Propose, which returns once the entry is applied.
const (
	opPut    = 1
	opStatus = 2

	statusOK  = 0
	statusErr = 1

	// maxCtlFrame bounds a control frame; the bench sends small values.
	maxCtlFrame = 1 << 20
)

// ctlStatus is a node's answer to opStatus.
type ctlStatus struct {
	ID      uint64     `json:"id"`
	Leader  uint64     `json:"leader"`
	Applied uint64     `json:"applied"`
	Saves   *saveStats `json:"saves,omitempty"`
}

func writeFrame(w *bufio.Writer, body []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Flush()
}

// readFrame reads one frame into buf (grown as needed) and returns it.
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxCtlFrame {
		return buf, fmt.Errorf("control frame of %d bytes exceeds %d", n, maxCtlFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// ctlHandler is what a control server serves.
type ctlHandler interface {
	// put proposes key=value and returns the applied index.
	put(ctx context.Context, key string, value []byte) (uint64, error)
	status() ctlStatus
}

// serveCtl accepts control connections on ln until it is closed, and waits
// for the connection goroutines before returning.
func serveCtl(ln net.Listener, h ctlHandler) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveCtlConn(c, h)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			_ = c.Close()
		}()
	}
}

func serveCtlConn(c net.Conn, h ctlHandler) {
	r := bufio.NewReaderSize(c, 4<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	var req []byte
	resp := make([]byte, 0, 64)
	for {
		var err error
		if req, err = readFrame(r, req); err != nil {
			return
		}
		if len(req) == 0 {
			return
		}
		resp = resp[:0]
		switch req[0] {
		case opPut:
			if len(req) < 3 || len(req) < 3+int(binary.BigEndian.Uint16(req[1:3])) {
				return
			}
			kl := int(binary.BigEndian.Uint16(req[1:3]))
			key := string(req[3 : 3+kl])
			value := req[3+kl:]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			idx, perr := h.put(ctx, key, value)
			took := time.Since(start)
			cancel()
			st := byte(statusOK)
			if perr != nil {
				st = statusErr
			}
			resp = append(resp, st)
			resp = binary.BigEndian.AppendUint64(resp, idx)
			resp = binary.BigEndian.AppendUint64(resp, uint64(took))
			if perr != nil {
				resp = append(resp, perr.Error()...)
			}
		case opStatus:
			b, _ := json.Marshal(h.status())
			resp = append(resp, b...)
		default:
			return
		}
		if err := writeFrame(w, resp); err != nil {
			return
		}
	}
}

// ctlClient is one control connection; not safe for concurrent use.
type ctlClient struct {
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	req []byte
	buf []byte
}

func dialCtl(addr string) (*ctlClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &ctlClient{c: c, r: bufio.NewReaderSize(c, 4<<10), w: bufio.NewWriterSize(c, 4<<10)}, nil
}

func (c *ctlClient) Close() error { return c.c.Close() }

// errProposal is a proposal the node refused or failed; the connection is
// still usable.
type errProposal struct{ msg string }

func (e *errProposal) Error() string { return "proposal failed: " + e.msg }

// put proposes key=value and returns the applied index and how long the
// node's Propose took.
func (c *ctlClient) put(key string, value []byte, timeout time.Duration) (uint64, time.Duration, error) {
	c.req = append(c.req[:0], opPut)
	c.req = binary.BigEndian.AppendUint16(c.req, uint16(len(key)))
	c.req = append(c.req, key...)
	c.req = append(c.req, value...)
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(c.w, c.req); err != nil {
		return 0, 0, err
	}
	var err error
	if c.buf, err = readFrame(c.r, c.buf); err != nil {
		return 0, 0, err
	}
	if len(c.buf) < 17 {
		return 0, 0, errors.New("short put response")
	}
	idx := binary.BigEndian.Uint64(c.buf[1:9])
	took := time.Duration(binary.BigEndian.Uint64(c.buf[9:17]))
	if c.buf[0] != statusOK {
		return idx, took, &errProposal{msg: string(c.buf[17:])}
	}
	return idx, took, nil
}

func (c *ctlClient) status(timeout time.Duration) (ctlStatus, error) {
	var st ctlStatus
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(c.w, []byte{opStatus}); err != nil {
		return st, err
	}
	var err error
	if c.buf, err = readFrame(c.r, c.buf); err != nil {
		return st, err
	}
	err = json.Unmarshal(c.buf, &st)
	return st, err
}
