// Package cli implements the raftbus command. It is a library so that tests
// can run commands in-process; cmd/raftbus only calls Main, which returns
// the exit code.
//
// Its contract with the user:
//
//   - Exit codes are the Exit* constants, the same for every command and
//     documented in the README; 'endpoint health' alone uses the Nagios
//     codes (Health*). Every error maps to one: usage errors (unknown
//     command or flag, invalid environment values, missing files named
//     by flags) are ExitUsage, refused credentials ExitPermission, an
//     unreachable server ExitUnreachable, a removed node ExitRemoved.
//   - A flag whose help ends in "($VAR)" reads $VAR when it is not given,
//     through the flag's own parser (env.go); --help never shows a value
//     from the environment, so secrets in it are never printed. Commands
//     that must not act on a leftover variable (a join's cluster) check
//     that the flag was given on the command line.
//   - NATS connection settings follow the nats CLI: the same flags and
//     variables, and its saved contexts (natscontext.go), under flags and
//     variables.
//   - Output meant for people goes to stdout; errors to stderr as one
//     "Error: ..." line; logs (nodes, 'up') never mix with a command's
//     output: 'up' writes them to its data directory's log file.
package cli
