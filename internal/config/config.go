// Package config loads the YAML configuration of smd's daemons the way the
// house style asks: defaults, then a YAML file, then SMD_* environment
// variables, then flags (applied by the caller), then Validate.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration that reads "30s" or "1m30s" from YAML and env.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 30s, 5m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Load returns defaults overlaid by the YAML file at path (none when
// path is empty), then by SMD_* environment variables (ApplyEnv with
// os.LookupEnv): the loading shared by the agent's and the manager's
// LoadConfig. T is a config struct. The caller applies flags and calls
// Validate.
func Load[T any](path string, defaults T) (T, error) {
	c := defaults
	if err := LoadFile(path, &c); err != nil {
		return c, err
	}
	if err := ApplyEnv("SMD", &c, os.LookupEnv); err != nil {
		return c, err
	}
	return c, nil
}

// LoadFile decodes the YAML file at path into dst, refusing unknown keys.
// An empty path does nothing; a path that was given but is missing is an
// error.
func LoadFile(path string, dst any) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

// ApplyEnv overrides fields of the struct pointed to by dst from environment
// variables named prefix + the upper-cased YAML path joined by "_", e.g.
// SMD_DISPATCH_LEASE_DURATION for dispatch.lease_duration. Lists are
// comma-separated. lookup is os.LookupEnv in production.
func ApplyEnv(prefix string, dst any, lookup func(string) (string, bool)) error {
	return applyEnv(prefix, reflect.ValueOf(dst).Elem(), lookup)
}

var durationType = reflect.TypeOf(Duration(0))

func applyEnv(prefix string, v reflect.Value, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		name := prefix + "_" + strings.ToUpper(tag)
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(name, fv, lookup); err != nil {
				return err
			}
			continue
		}
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setValue(fv, raw); err != nil {
			return fmt.Errorf("config: env %s: %w", name, err)
		}
	}
	return nil
}

func setValue(fv reflect.Value, raw string) error {
	switch {
	case fv.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration (use e.g. 30s, 5m)", raw)
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(raw)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", raw)
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", raw)
		}
		fv.SetInt(int64(n))
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// FieldError is a validation error naming the field and the rule.
type FieldError struct {
	Field string
	Rule  string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Rule }

// Errf returns a *FieldError.
func Errf(field, format string, args ...any) error {
	return &FieldError{Field: field, Rule: fmt.Sprintf(format, args...)}
}

// Flatten unwraps errors.Join trees into their leaves (the FieldErrors of
// a Validate, each reported on its own).
func Flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}
