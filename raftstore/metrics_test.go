package raftstore

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestFsyncHistogramObservesWALSyncs: every synced Save fsyncs Pebble's WAL
// at least once, and the histogram sees it (issue 11: no fsync metric).
func TestFsyncHistogramObservesWALSyncs(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(t.TempDir(), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const saves = 5
	for i := uint64(1); i <= saves; i++ {
		e := &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: []byte("x")}
		if err := s.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}, []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "raftbus_raftstore_wal_fsync_duration_seconds" {
			if n := f.GetMetric()[0].GetHistogram().GetSampleCount(); n < saves {
				t.Fatalf("%d WAL fsyncs observed after %d synced saves", n, saves)
			}
			return
		}
	}
	t.Fatal("raftbus_raftstore_wal_fsync_duration_seconds not exported")
}
