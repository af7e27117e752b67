package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// maxValueBytes is Secrets Manager's limit on a value; a base64 input may
// be a third longer, plus line breaks.
const maxValueBytes = 65536

// readValue reads a secret value from --value-file, or from stdin when it
// is not a terminal. Values never come from the command line. With binary
// the input is base64 (standard alphabet, padding and line breaks
// allowed) and the value is sent as binary_value.
func readValue(cmd *cobra.Command, file string, required, binary bool) (*delegatev1.SecretValue, error) {
	var r io.Reader
	switch {
	case file == "-":
		r = cmd.InOrStdin()
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--value-file: %w", err))
		}
		defer f.Close()
		r = f
	default:
		in := cmd.InOrStdin()
		if f, ok := in.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			if required {
				return nil, usageErr(fmt.Errorf("value: give it with --value-file FILE or on stdin (never on the command line)"))
			}
			return nil, nil
		}
		r = in
	}
	// One byte over the limit reaches the delegate's size check; base64 may
	// be a third longer, with a line break (CRLF) every 32 characters.
	limit := int64(maxValueBytes)
	if binary {
		limit = maxValueBytes/3*4 + 4 + maxValueBytes/16
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read value: %w", err)
	}
	if binary && int64(len(b)) > limit {
		return nil, usageErr(fmt.Errorf("value: must be 1-%d bytes", maxValueBytes))
	}
	if len(b) == 0 {
		if required {
			return nil, usageErr(fmt.Errorf("value: must not be empty"))
		}
		return nil, nil
	}
	if !binary {
		if !utf8.Valid(b) {
			// It could not be sent as text; the error never quotes it.
			hint := ""
			if cmd.Flags().Lookup("binary") != nil {
				hint = "; give a binary value in base64 with --binary"
			}
			return nil, usageErr(fmt.Errorf("value: must be UTF-8 text%s", hint))
		}
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: string(b)}}, nil
	}
	clean := bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, b)
	bin, err := base64.StdEncoding.DecodeString(string(clean))
	if err != nil {
		// The error names an offset, never the input.
		return nil, usageErr(fmt.Errorf("--binary: the value is not valid base64 (%v)", err))
	}
	if len(bin) == 0 {
		return nil, usageErr(fmt.Errorf("value: must not be empty"))
	}
	return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{BinaryValue: bin}}, nil
}

// parseTags parses repeated key=value flags.
func parseTags(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr(fmt.Errorf("--%s: want key=value, got %q", flag, kv))
		}
		out[k] = v
	}
	return out, nil
}

// unmanagedFlags are --adopt and --force of the commands that change an
// existing secret.
type unmanagedFlags struct{ adopt, force bool }

func (u *unmanagedFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&u.adopt, "adopt", false, "if the secret lacks the connector's managed-by tag, add it and go on")
	cmd.Flags().BoolVar(&u.force, "force", false, "go on even if the secret lacks the connector's managed-by tag, without adding it")
}

func (u *unmanagedFlags) policy() (delegatev1.Unmanaged, error) {
	switch {
	case u.adopt && u.force:
		return 0, usageErr(fmt.Errorf("--adopt and --force: give at most one"))
	case u.adopt:
		return delegatev1.Unmanaged_UNMANAGED_ADOPT, nil
	case u.force:
		return delegatev1.Unmanaged_UNMANAGED_FORCE, nil
	}
	return delegatev1.Unmanaged_UNMANAGED_REFUSE, nil
}

// generateFlags are the GetRandomPassword options of `secret create --generate`.
type generateFlags struct {
	on, show                             bool
	length                               int32
	exclude                              string
	noNumbers, noPunct, noUpper, noLower bool
	space, requireEach                   bool
}

func (g *generateFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&g.on, "generate", false, "generate the value on the delegate (GetRandomPassword) instead of reading it")
	f.BoolVar(&g.show, "show", false, "print the generated value (implies --wait; it is never stored or logged)")
	f.Int32Var(&g.length, "length", 0, "generated value: length, 1-4096 (default 32)")
	f.StringVar(&g.exclude, "exclude-characters", "", "generated value: characters never to use")
	f.BoolVar(&g.noNumbers, "exclude-numbers", false, "generated value: no digits")
	f.BoolVar(&g.noPunct, "exclude-punctuation", false, "generated value: no punctuation")
	f.BoolVar(&g.noUpper, "exclude-uppercase", false, "generated value: no upper-case letters")
	f.BoolVar(&g.noLower, "exclude-lowercase", false, "generated value: no lower-case letters")
	f.BoolVar(&g.space, "include-space", false, "generated value: may hold spaces")
	f.BoolVar(&g.requireEach, "require-each-included-type", true, "generated value: at least one character of every type used (=false to allow fewer)")
}

// op returns the GeneratePassword of the flags, nil without --generate;
// the other generate flags without --generate are an error.
func (g *generateFlags) op(cmd *cobra.Command) (*delegatev1.GeneratePassword, error) {
	if !g.on {
		for _, name := range []string{"show", "length", "exclude-characters", "exclude-numbers", "exclude-punctuation",
			"exclude-uppercase", "exclude-lowercase", "include-space", "require-each-included-type"} {
			if cmd.Flags().Changed(name) {
				return nil, usageErr(fmt.Errorf("--%s: only with --generate", name))
			}
		}
		return nil, nil
	}
	if cmd.Flags().Changed("length") && (g.length < 1 || g.length > 4096) {
		return nil, usageErr(fmt.Errorf("--length: must be 1-4096"))
	}
	p := &delegatev1.GeneratePassword{
		Length: g.length, ExcludeCharacters: g.exclude,
		ExcludeNumbers: g.noNumbers, ExcludePunctuation: g.noPunct, ExcludeUppercase: g.noUpper, ExcludeLowercase: g.noLower,
		IncludeSpace: g.space,
	}
	if cmd.Flags().Changed("require-each-included-type") {
		p.RequireEachIncludedType = &g.requireEach
	}
	return p, nil
}
