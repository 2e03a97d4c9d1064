package cli

import (
	"fmt"
	"os"
	"regexp"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Environment variables are bound to flags by their help text: a flag whose
// usage ends in "($NAME)" reads $NAME when it is not given on the command
// line. The value is applied after parsing, through the flag's own parser,
// so that an invalid value (NATS_TIMEOUT=banana) is an error like an
// invalid flag, and so that --help never shows a value taken from the
// environment: a password in NATS_PASSWORD must not appear as a default.

var envRef = regexp.MustCompile(`\(\$([A-Z][A-Z0-9_]*)\)\s*$`)

// envOr returns def. It exists so that a flag's registration reads like
// its binding; the environment itself is applied by applyEnv.
func envOr(_ string, def string) string { return def }

// envVarOf returns the environment variable bound to fl, or "".
func envVarOf(fl *pflag.Flag) string {
	if m := envRef.FindStringSubmatch(fl.Usage); m != nil {
		return m[1]
	}
	return ""
}

// applyEnv sets every flag of cmd that was not given on the command line
// from its environment variable, when that is set. It leaves the flag's
// Changed false: the value came from the environment, not from the user's
// command line, and commands that must tell the two apart can.
func applyEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if err != nil || fl.Changed {
			return
		}
		key := envVarOf(fl)
		if key == "" {
			return
		}
		v, ok := os.LookupEnv(key)
		if !ok {
			return
		}
		if e := fl.Value.Set(v); e != nil {
			// The value is not echoed: it may be a secret.
			err = usageErr(fmt.Errorf("invalid value in $%s for --%s: %w", key, fl.Name, e))
		}
	})
	return err
}

// fromEnv reports whether flag name of cmd took its value from the
// environment rather than from the command line.
func fromEnv(cmd *cobra.Command, name string) bool {
	fl := cmd.Flags().Lookup(name)
	if fl == nil || fl.Changed {
		return false
	}
	key := envVarOf(fl)
	if key == "" {
		return false
	}
	_, ok := os.LookupEnv(key)
	return ok
}
