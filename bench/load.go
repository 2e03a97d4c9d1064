package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range, in microseconds: 1 µs to 60 s at 3 significant digits.
const (
	histMinMicros = 1
	histMaxMicros = 60_000_000
	histSigFigs   = 3
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs)
}

func recordMicros(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	if us < histMinMicros {
		us = histMinMicros
	}
	_ = h.RecordValue(min(us, histMaxMicros))
}

// loadSpec is one step of load against a cluster's leader.
type loadSpec struct {
	Clients   int
	Warmup    time.Duration
	Measure   time.Duration
	MaxOps    int64 // hard cap on proposals in the whole step (warmup included)
	ValueSize int
	Keys      int
	Via       string // "rpc" or "http"
	// progress, if set, is called about once a second with the number of
	// commits measured so far.
	progress func(elapsed time.Duration, commits int64)
}

// loadResult is what the clients measured.
type loadResult struct {
	Commits int64
	Errors  int64
	Elapsed time.Duration // the measured window
	Node    *hdrhistogram.Histogram
	RTT     *hdrhistogram.Histogram
	// FirstErr is the first error seen, for the log.
	FirstErr string
}

// target is where load goes: the leader's control and HTTP addresses.
type target struct {
	ctl     string
	httpURL string
}

// window is the measured interval of a step; the samplers run at its edges.
type window struct {
	onStart func()
	onEnd   func()
}

// runLoad runs spec.Clients closed-loop clients against t: each sends a put,
// waits for the answer (the entry applied on the leader) and sends the next.
// Results count only operations that complete inside the measured window,
// which starts after the warmup and ends after spec.Measure or when MaxOps
// is reached.
func runLoad(ctx context.Context, t target, spec loadSpec, w window) (*loadResult, error) {
	start := time.Now()
	winStart := start.Add(spec.Warmup)
	winEnd := winStart.Add(spec.Measure)
	var (
		issued   atomic.Int64
		commits  atomic.Int64
		stop     atomic.Bool
		capped   = make(chan struct{})
		capOnce  sync.Once
		firstErr atomic.Value
	)
	type clientOut struct {
		node, rtt *hdrhistogram.Histogram
		errors    int64
		err       error
	}
	outs := make([]clientOut, spec.Clients)
	value := bytes.Repeat([]byte{'v'}, spec.ValueSize)

	var httpClient *http.Client
	if spec.Via == "http" {
		httpClient = &http.Client{
			Transport: &http.Transport{MaxIdleConns: spec.Clients, MaxIdleConnsPerHost: spec.Clients, DisableCompression: true},
			Timeout:   10 * time.Second,
		}
		defer httpClient.CloseIdleConnections()
	}

	var wg sync.WaitGroup
	for c := range spec.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &outs[c]
			out.node, out.rtt = newHist(), newHist()
			rng := rand.New(rand.NewPCG(uint64(c)+1, uint64(start.UnixNano())))
			var cc *ctlClient
			if httpClient == nil {
				var err error
				if cc, err = dialCtl(t.ctl); err != nil {
					out.err = err
					return
				}
				defer cc.Close()
			}
			key := make([]byte, 0, 16)
			for !stop.Load() && ctx.Err() == nil {
				if issued.Add(1) > spec.MaxOps {
					capOnce.Do(func() { close(capped) })
					return
				}
				key = fmt.Appendf(key[:0], "k%06d", rng.IntN(spec.Keys))
				t0 := time.Now()
				var took time.Duration
				var err error
				if cc != nil {
					_, took, err = cc.put(string(key), value, 15*time.Second)
				} else {
					err = httpPut(httpClient, t.httpURL, string(key), value)
				}
				t1 := time.Now()
				var perr *errProposal
				switch {
				case errors.As(err, &perr):
					// The node refused or failed the proposal (a leader
					// change, a timeout): counted, the client goes on.
				case err != nil:
					out.err = err
					stop.Store(true)
					return
				}
				if t1.Before(winStart) || t1.After(winEnd) {
					continue
				}
				if err != nil {
					out.errors++
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				commits.Add(1)
				recordMicros(out.rtt, t1.Sub(t0))
				if cc != nil {
					recordMicros(out.node, took)
				}
			}
		}()
	}

	// Sample at the window's edges, report progress while it runs.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var actualStart, actualEnd time.Time
	sleepUntil := func(at time.Time) bool {
		tm := time.NewTimer(time.Until(at))
		defer tm.Stop()
		select {
		case <-tm.C:
			return true
		case <-capped:
		case <-done:
		case <-ctx.Done():
		}
		return false
	}
	if sleepUntil(winStart) {
		actualStart = time.Now()
		if w.onStart != nil {
			w.onStart()
		}
		tick := time.NewTicker(time.Second)
	measure:
		for {
			select {
			case <-tick.C:
				if spec.progress != nil {
					spec.progress(time.Since(actualStart), commits.Load())
				}
			case <-time.After(time.Until(winEnd)):
				break measure
			case <-capped:
				break measure
			case <-done:
				break measure
			case <-ctx.Done():
				break measure
			}
		}
		tick.Stop()
		actualEnd = time.Now()
		if w.onEnd != nil {
			w.onEnd()
		}
	}
	stop.Store(true)
	<-done

	// Operations are counted by completion time in [winStart, winEnd]; if
	// the op cap ended the window early, it ended when the samplers ran.
	end := winEnd
	if actualEnd.Before(end) {
		end = actualEnd
	}
	res := &loadResult{Node: newHist(), RTT: newHist(), Commits: commits.Load(), Elapsed: end.Sub(winStart)}
	if v := firstErr.Load(); v != nil {
		res.FirstErr = v.(string)
	}
	for _, o := range outs {
		if o.err != nil {
			return nil, fmt.Errorf("client failed: %w", o.err)
		}
		res.Node.Merge(o.node)
		res.RTT.Merge(o.rtt)
		res.Errors += o.errors
	}
	if actualStart.IsZero() {
		return nil, fmt.Errorf("load stopped before the measured window (op cap %d too small for the warmup?)", spec.MaxOps)
	}
	return res, ctx.Err()
}

// httpPut writes key=value through the kv HTTP API; a non-2xx answer is a
// failed proposal, not a broken client.
func httpPut(c *http.Client, base, key string, value []byte) error {
	req, err := http.NewRequest(http.MethodPut, base+"/kv/"+key, bytes.NewReader(value))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return &errProposal{msg: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))}
	}
	return nil
}
