package connector_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/manager/connector"
)

// planted is a credential value that must never appear in an error.
const planted = "PLANTEDsecretZ9q8w7e6r5t4y3u2i1"

// TestNoErrorLeaksASecret plants a credential value everywhere a value can
// reach an error and proves no message carries it.
func TestNoErrorLeaksASecret(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		run  func() error
	}{
		{"validate plaintext secret key", func() error {
			c := validConnector(accessKey)
			c.SecretAccessKey = planted
			return connector.Validate(c)
		}},
		{"validate plaintext secret key with slashes", func() error {
			c := validConnector(accessKey)
			c.SecretAccessKey = planted + "/+x"
			return connector.Validate(c)
		}},
		{"validate unknown-kind secret key", func() error {
			c := validConnector(accessKey)
			c.SecretAccessKey = "vault:" + planted
			return connector.Validate(c)
		}},
		{"validate malformed access key id", func() error {
			c := validConnector(accessKey)
			c.AccessKeyId = planted + "-!"
			return connector.Validate(c)
		}},
		{"validate keys on the wrong type", func() error {
			c := validConnector(instance)
			c.AccessKeyId, c.SecretAccessKey = planted, planted
			return connector.Validate(c)
		}},
		{"validate endpoint with userinfo", func() error {
			c := validConnector(instance)
			c.EndpointUrl = "https://user:" + planted + "@example.com"
			c.StsEndpointUrl = "ftp://user:" + planted + "@example.com"
			return connector.Validate(c)
		}},
		{"parse ref", func() error {
			_, err := connector.ParseRef("nope:" + planted)
			return err
		}},
		{"settings plaintext secret key", func() error {
			c := validConnector(accessKey)
			c.SecretAccessKey = planted
			_, err := connector.Settings(c, nil, "")
			return err
		}},
		{"settings builtin id fails after secret resolves", func() error {
			c := validConnector(accessKey)
			c.AccessKeyId = "builtin:kid"
			_, err := connector.Settings(c, func(_, name string) (string, error) {
				if name == "kid" {
					return "", errors.New("store: not found")
				}
				return planted, nil
			}, "")
			return err
		}},
		{"settings builtin secret fails after id resolves", func() error {
			c := validConnector(accessKey)
			c.AccessKeyId = "builtin:kid"
			c.SecretAccessKey = "builtin:missing"
			_, err := connector.Settings(c, func(_, name string) (string, error) {
				if name == "kid" {
					return planted, nil
				}
				return "", errors.New("store: not found")
			}, "")
			return err
		}},
		{"settings bad plaintext id ref", func() error {
			c := validConnector(accessKey)
			c.AccessKeyId = "x:" + planted
			_, err := connector.Settings(c, nil, "")
			return err
		}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.run()
			if err == nil {
				t.Fatal("got no error, want one")
			}
			for _, msg := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
				if strings.Contains(msg, planted) {
					t.Errorf("error %q carries the planted secret", msg)
				}
			}
		})
	}
}
