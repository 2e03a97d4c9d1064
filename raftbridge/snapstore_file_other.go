//go:build !linux

package raftbridge

import "os"

func startWriteback(*os.File, int64, int64) {}
func dropBehind(*os.File, int64, int64)     {}
