package awsemu_test

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

func TestDeleteScheduleAndRestore(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s, url := mustStart(t, awsemu.Options{Now: clk.Now})
	sm := smClient(t, url, defaultCreds, noRetry)
	ctx := t.Context()
	id := aws.String("doomed")
	s.PutSecretDirect("doomed", "v1", map[string]string{"k": "v"})

	del, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: id})
	if err != nil {
		t.Fatalf("DeleteSecret: %v", err)
	}
	if want := clk.Now().Add(30 * 24 * time.Hour); !aws.ToTime(del.DeletionDate).Equal(want) {
		t.Errorf("DeleteSecret DeletionDate = %v, want %v (the default 30-day window)", aws.ToTime(del.DeletionDate), want)
	}
	desc, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: id})
	if err != nil || !aws.ToTime(desc.DeletedDate).Equal(clk.Now()) {
		t.Errorf("DescribeSecret of a scheduled secret = DeletedDate %v, %v; want %v", desc.DeletedDate, err, clk.Now())
	}

	// Every call AWS refuses on a secret scheduled for deletion.
	tests := []struct {
		name string
		call func() error
	}{
		{"GetSecretValue", func() error {
			_, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: id})
			return err
		}},
		{"PutSecretValue", func() error {
			_, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: id, SecretString: aws.String("v2")})
			return err
		}},
		{"UpdateSecret", func() error {
			_, err := sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: id, Description: aws.String("d")})
			return err
		}},
		{"TagResource", func() error {
			_, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: id, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
			return err
		}},
		{"CreateSecret same name", func() error {
			_, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: id, SecretString: aws.String("v")})
			return err
		}},
		{"DeleteSecret again", func() error {
			_, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: id, RecoveryWindowInDays: aws.Int64(7)})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ir *types.InvalidRequestException
			if !errors.As(err, &ir) {
				t.Errorf("%s on a scheduled secret: error = %v, want *types.InvalidRequestException", tt.name, err)
			}
		})
	}

	listed := func(include bool) int {
		out, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{IncludePlannedDeletion: aws.Bool(include)})
		if err != nil {
			t.Fatalf("ListSecrets: %v", err)
		}
		return len(out.SecretList)
	}
	if n := listed(false); n != 0 {
		t.Errorf("ListSecrets() = %d secrets, want 0 (scheduled ones hidden)", n)
	}
	if n := listed(true); n != 1 {
		t.Errorf("ListSecrets(IncludePlannedDeletion) = %d secrets, want 1", n)
	}

	if _, err := sm.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: id}); err != nil {
		t.Fatalf("RestoreSecret: %v", err)
	}
	got, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: id})
	if err != nil || aws.ToString(got.SecretString) != "v1" {
		t.Errorf("GetSecretValue after restore = %v, %v; want v1", got, err)
	}
	if st, _ := s.Secret("doomed"); !st.DeletedDate.IsZero() || st.Tags["k"] != "v" {
		t.Errorf("Secret after restore = %+v, want no DeletedDate and the tags kept", st)
	}

	// The recovery window elapses: the secret is gone and its name is free.
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: id, RecoveryWindowInDays: aws.Int64(7)}); err != nil {
		t.Fatalf("DeleteSecret(7 days): %v", err)
	}
	clk.Advance(7*24*time.Hour + time.Second)
	if _, ok := s.Secret("doomed"); ok {
		t.Errorf("Secret after the recovery window: still present")
	}
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: id, SecretString: aws.String("again")}); err != nil {
		t.Errorf("CreateSecret after the recovery window: %v", err)
	}
}

func TestDeleteParameters(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s, url := mustStart(t, awsemu.Options{Now: clk.Now})
	sm := smClient(t, url, defaultCreds, noRetry)

	tests := []struct {
		name     string
		window   *int64
		force    *bool
		wantCode string
		wantDays int
	}{
		{"window too short", aws.Int64(6), nil, "InvalidParameterException", 0},
		{"window too long", aws.Int64(31), nil, "InvalidParameterException", 0},
		{"window and force", aws.Int64(7), aws.Bool(true), "InvalidParameterException", 0},
		{"shortest window", aws.Int64(7), nil, "", 7},
		{"longest window", aws.Int64(30), nil, "", 30},
		{"default window", nil, aws.Bool(false), "", 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.PutSecretDirect(tt.name, "v", nil)
			out, err := sm.DeleteSecret(t.Context(), &secretsmanager.DeleteSecretInput{SecretId: aws.String(tt.name),
				RecoveryWindowInDays: tt.window, ForceDeleteWithoutRecovery: tt.force})
			if code := errorCode(err); code != tt.wantCode {
				t.Fatalf("DeleteSecret error = %v, want code %q", err, tt.wantCode)
			}
			if err != nil {
				return
			}
			want := clk.Now().Add(time.Duration(tt.wantDays) * 24 * time.Hour)
			if !aws.ToTime(out.DeletionDate).Equal(want) {
				t.Errorf("DeletionDate = %v, want %v", aws.ToTime(out.DeletionDate), want)
			}
		})
	}
}

func TestForceDelete(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds, noRetry)
	ctx := t.Context()
	s.PutSecretDirect("active", "v", nil)
	s.PutSecretDirect("scheduled", "v", nil)
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("scheduled")}); err != nil {
		t.Fatalf("DeleteSecret(scheduled): %v", err)
	}

	for _, name := range []string{"active", "scheduled", "never-existed"} {
		t.Run(name, func(t *testing.T) {
			out, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(name), ForceDeleteWithoutRecovery: aws.Bool(true)})
			if err != nil {
				t.Fatalf("DeleteSecret(%q, force) error = %v, want success", name, err)
			}
			if aws.ToString(out.Name) != name || out.DeletionDate == nil {
				t.Errorf("DeleteSecret(%q, force) = Name %q DeletionDate %v", name, aws.ToString(out.Name), out.DeletionDate)
			}
			if _, ok := s.Secret(name); ok {
				t.Errorf("Secret(%q) after a force delete: still present", name)
			}
			// A second force delete is still a success: retries are safe.
			if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(name), ForceDeleteWithoutRecovery: aws.Bool(true)}); err != nil {
				t.Errorf("DeleteSecret(%q, force) again: %v", name, err)
			}
			if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretString: aws.String("new")}); err != nil {
				t.Errorf("CreateSecret(%q) after a force delete: %v", name, err)
			}
		})
	}

	// Without force, a missing secret is ResourceNotFoundException.
	_, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("missing")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("DeleteSecret(missing) error = %v, want ResourceNotFoundException", err)
	}
	_, err = sm.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String("missing")})
	if !errors.As(err, &nf) {
		t.Errorf("RestoreSecret(missing) error = %v, want ResourceNotFoundException", err)
	}
}
