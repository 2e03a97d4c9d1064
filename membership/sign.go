package membership

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Headers of a signed record.
const (
	// HeaderSigner carries the signer's nkey public key ("U...").
	HeaderSigner = "Raftbus-Signer"
	// HeaderSig carries base64url (unpadded) of the ed25519 signature over
	// subject + "\n" + body.
	HeaderSig = "Raftbus-Sig"
)

// Reasons a record is rejected (RejectedRecord.Reason, and the labels of
// the rejection counts).
const (
	// RejectMalformed: not a record this build can read.
	RejectMalformed = "malformed"
	// RejectUnsigned: a node's record without a signature.
	RejectUnsigned = "unsigned"
	// RejectBadSignature: the signature does not verify with the key it
	// names.
	RejectBadSignature = "bad_signature"
	// RejectWrongSource: the subject, the body and the signer disagree
	// about who wrote the record (another incarnation's subject, another
	// cluster, an announcement of someone else).
	RejectWrongSource = "wrong_source"
	// RejectNotAuthorized: the signer is not a member that could have
	// written the record (a committed change must come from a voter of the
	// membership it follows, an outcome from a member).
	RejectNotAuthorized = "not_authorized"
	// RejectUnconfirmed: a committed change that a quorum of voters never
	// attested: another change took its index, or it waited too long.
	RejectUnconfirmed = "unconfirmed"
)

func signedData(subject string, body []byte) []byte {
	b := make([]byte, 0, len(subject)+1+len(body))
	b = append(append(append(b, subject...), '\n'), body...)
	return b
}

// sign returns the signature headers of body published on subject.
func sign(kp nkeys.KeyPair, subject string, body []byte) (nats.Header, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("membership: signer key: %w", err)
	}
	sig, err := kp.Sign(signedData(subject, body))
	if err != nil {
		return nil, fmt.Errorf("membership: sign record: %w", err)
	}
	h := nats.Header{}
	h.Set(HeaderSigner, pub)
	h.Set(HeaderSig, base64.RawURLEncoding.EncodeToString(sig))
	return h, nil
}

// dedupID derives a Nats-Msg-Id from key that only the signer can compute
// (ed25519 signatures are deterministic): a writer that is not the signer
// cannot pre-empt the signer's record through the stream's de-duplication.
func dedupID(kp nkeys.KeyPair, key string) (string, error) {
	if kp == nil {
		return key, nil
	}
	sig, err := kp.Sign([]byte("raftbus-msg-id\n" + key))
	if err != nil {
		return "", fmt.Errorf("membership: sign message ID: %w", err)
	}
	return key + "-" + base64.RawURLEncoding.EncodeToString(sig[:12]), nil
}

var errUnsigned = errors.New("unsigned")

// verify checks the signature headers of a record and returns the signer's
// public key; the reason is one of the Reject constants.
func verify(subject string, body []byte, h nats.Header) (signer string, reason string, err error) {
	pub, sig64 := h.Get(HeaderSigner), h.Get(HeaderSig)
	if pub == "" || sig64 == "" {
		return "", RejectUnsigned, errUnsigned
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", RejectBadSignature, fmt.Errorf("signer %q is not an nkey user public key", truncate(pub, 60))
	}
	sig, err := base64.RawURLEncoding.DecodeString(sig64)
	if err != nil {
		return "", RejectBadSignature, fmt.Errorf("signature is not base64url")
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return "", RejectBadSignature, fmt.Errorf("signer %s: %v", pub, err)
	}
	if err := kp.Verify(signedData(subject, body), sig); err != nil {
		return "", RejectBadSignature, fmt.Errorf("signature by %s does not verify", pub)
	}
	return pub, "", nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
