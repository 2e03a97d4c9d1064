module github.com/raftbus/raftbus

go 1.26.0

require (
	github.com/google/uuid v1.6.0
	go.etcd.io/raft/v3 v3.7.0
)

require (
	github.com/cockroachdb/datadriven v1.0.3-0.20250407164829-2945557346d5 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
