package connector_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   *delegatev1.Connector
		want *delegatev1.Connector
	}{
		{"trims and sorts",
			&delegatev1.Connector{
				Identifier: " aws_prod ", Name: " AWS prod\n", Description: "\tdesc ",
				Tags:           map[string]string{" team ": " platform ", "env": "prod"},
				Scope:          &delegatev1.Scope{Account: " a ", Org: " o", Project: "p "},
				CredentialType: accessKey, AccessKeyId: " AKIA1 ", SecretAccessKey: " builtin:k ",
				RoleArn: " arn ", ExternalId: " ext ", Region: " us-east-1 ",
				SecretNamePrefix:  " /devops/team/ ",
				DelegateSelectors: []string{" Linux", "gpu", "", "  ", "LINUX", "gpu "},
				EndpointUrl:       " http://x ", StsEndpointUrl: " http://y ", KmsKeyId: " alias/k ",
				ManagedByTagKey: " owner ",
			},
			&delegatev1.Connector{
				Identifier: "aws_prod", Name: "AWS prod", Description: "desc",
				Tags:           map[string]string{"team": "platform", "env": "prod"},
				Scope:          &delegatev1.Scope{Account: "a", Org: "o", Project: "p"},
				CredentialType: accessKey, AccessKeyId: "AKIA1", SecretAccessKey: "builtin:k",
				RoleArn: "arn", ExternalId: "ext", Region: "us-east-1",
				SecretNamePrefix:  "devops/team",
				DelegateSelectors: []string{"gpu", "linux"},
				EndpointUrl:       "http://x", StsEndpointUrl: "http://y", KmsKeyId: "alias/k",
				ManagedByTagKey: "owner",
			}},
		{"only empty selectors",
			&delegatev1.Connector{DelegateSelectors: []string{"", " "}},
			&delegatev1.Connector{}},
		{"oidc defaults to delegate",
			&delegatev1.Connector{CredentialType: oidc},
			&delegatev1.Connector{CredentialType: oidc, OidcConnectivity: delegatev1.OIDCConnectivity_DELEGATE}},
		{"oidc keeps platform",
			&delegatev1.Connector{CredentialType: oidc, OidcConnectivity: delegatev1.OIDCConnectivity_PLATFORM},
			&delegatev1.Connector{CredentialType: oidc, OidcConnectivity: delegatev1.OIDCConnectivity_PLATFORM}},
		{"non-oidc left unspecified",
			&delegatev1.Connector{CredentialType: assumeRole},
			&delegatev1.Connector{CredentialType: assumeRole}},
		{"colliding tag keys",
			&delegatev1.Connector{Tags: map[string]string{"a": "1", " a": "2"}},
			&delegatev1.Connector{Tags: map[string]string{"a": "1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			connector.Normalize(tt.in)
			if diff := cmp.Diff(tt.want, tt.in, protocmp.Transform()); diff != "" {
				t.Errorf("Normalize() mismatch (-want +got):\n%s", diff)
			}
		})
	}
	connector.Normalize(nil) // must not panic
}

func TestNormalizeThenValidate(t *testing.T) {
	t.Parallel()
	c := validConnector(oidc)
	c.OidcConnectivity = 0
	c.Identifier = "  aws_prod "
	c.SecretNamePrefix = "/devops/"
	c.DelegateSelectors = []string{"", "Linux "}
	if err := connector.Validate(c); err == nil {
		t.Fatal("Validate() before Normalize = nil, want problems")
	}
	connector.Normalize(c)
	if err := connector.Validate(c); err != nil {
		t.Errorf("Validate() after Normalize = %v, want nil", err)
	}
}
