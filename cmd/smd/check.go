package main

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	managerapi "github.com/smdelegate/smdelegate/manager/api"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// What the CLI checks before it sends anything, so that a mistake is
// named as the operator wrote it (a flag, an argument) rather than by the
// field of the request the manager would name, and never reaches the
// manager as text gRPC cannot carry. The rules are the manager's and the
// delegate's own (tasks.Validate, manager/connector): never a copy.

// checkText refuses an argument or a flag value that is not UTF-8: a
// request holding it cannot be marshaled (gRPC said "Internal: error
// while marshaling"). Arguments are named as the command's usage names
// them (NAME), flags by their name (--description). Flags that name
// files (a path may be any bytes) are left alone.
func checkText(cmd *cobra.Command, args []string) error {
	for i, a := range args {
		if !utf8.ValidString(a) {
			return usageErr(fmt.Errorf("%s: must be UTF-8 text", argName(cmd, i)))
		}
	}
	var err error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if pathFlag(f.Name) {
			return
		}
		if err == nil && !utf8.ValidString(f.Value.String()) {
			err = usageErr(fmt.Errorf("--%s: must be UTF-8 text", f.Name))
		}
	})
	return err
}

// pathFlag reports whether the flag of that name is a file or directory.
func pathFlag(name string) bool {
	return name == "file" || name == "config" || strings.HasSuffix(name, "-file") || strings.HasSuffix(name, "-dir")
}

// argName is the name the command's usage gives its i-th argument (NAME,
// ID), or "argument i+1".
func argName(cmd *cobra.Command, i int) string {
	words := strings.Fields(cmd.Use)
	if i+1 < len(words) {
		if n := strings.Trim(words[i+1], "[]"); n != "" && n == strings.ToUpper(n) {
			n, _, _ = strings.Cut(n, "#")
			return n
		}
	}
	return fmt.Sprintf("argument %d", i+1)
}

// secretFlag maps a field of a secret operation (tasks.Error.Field) to the
// flag or argument of smd secret that sets it.
var secretFlag = map[string]string{
	"name":                        "NAME",
	"value":                       "value",
	"description":                 "--description",
	"kms_key_id":                  "--kms-key-id",
	"tags":                        "--tag",
	"version_id":                  "--version-id",
	"version_stage":               "--version-stage",
	"recovery_window_days":        "--recovery-window-days",
	"name_prefix":                 "--prefix",
	"max_results":                 "--max-results",
	"generate.length":             "--length",
	"generate.exclude_characters": "--exclude-characters",
	"return_value":                "--show",
	"unmanaged":                   "--adopt/--force",
	"add":                         "--add/--remove",
}

// noManagedKey is a tag key no operator can give (tag keys are printable):
// the connector's managed-by tag key is unknown here, so its rule is left
// to the manager, which knows it.
const noManagedKey = "\x00"

// checkSecret refuses, before anything is sent, a secret operation the
// manager and the delegate would refuse, with tasks.Validate, naming the
// flag. Without the connector the CLI checks the name alone; the manager
// checks it again under the connector's prefix.
func checkSecret(req *delegatev1.SecretRequest) error {
	st, _ := managerapi.SecretTaskOf(req)
	if st == nil {
		return nil
	}
	st.Connector = &delegatev1.ConnectorSettings{ManagedByTagKey: noManagedKey}
	err := tasks.Validate(st)
	if err == nil {
		return nil
	}
	field, detail := err.Field, ""
	if i := strings.IndexByte(field, '['); i > 0 {
		field, detail = field[:i], field[i:] // tags["team"], remove[2]
	}
	flag, ok := secretFlag[field]
	switch {
	case field == "tags" && st.GetTag() != nil:
		flag = "--add"
	case field == "remove":
		flag = "--remove"
	case !ok:
		flag = err.Field
		detail = ""
	}
	if strings.HasPrefix(detail, `["`) && strings.HasSuffix(detail, `"]`) {
		detail = " " + detail[1:len(detail)-1] // --tag "team"
	}
	return usageErr(fmt.Errorf("%s%s: %s", flag, detail, err.Rule()))
}
