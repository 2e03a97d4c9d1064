// Package apicheck holds only a test: it lists the exported API of every
// public package of the module (everything outside internal/, test/,
// cmd/, the nested bench module and package main) and compares the list
// with testdata/api.txt, so that the API grows only deliberately.
//
// After an intended change, regenerate the golden file and review its diff:
//
//	go test ./internal/apicheck -update
//
// The listing is made from the source with go/ast (no type checking, so it
// takes milliseconds): every exported constant, variable, function, type,
// method of an exported type, exported struct field and interface method,
// with its signature as written. Unexported embedded fields and methods do
// not appear.
package apicheck
