// Package tlspeek reads the cleartext TLS handshake passing through a tunnel,
// without decrypting it, and decides whether the session may go on.
//
// # Client-certificate subjects
//
// Subjects (the policy's allowed_client_certificates) accepts, per entry:
//
//   - an RFC 4514 distinguished name as crypto/x509's pkix.Name.String
//     prints it: "CN=pos-0001,O=Contoso,C=SE";
//   - the same RDNs in the opposite order, as OpenSSL prints them:
//     "C = SE, O = Contoso, CN = pos-0001";
//   - OpenSSL's slash form: "/C=SE/O=Contoso/CN=pos-0001";
//   - a bare common name with no '=': "pos-0001", which matches any
//     certificate with that CN whatever the rest of its subject.
//
// A DN entry must match the whole subject: every RDN, in order (either
// direction); "CN=pos-0001" alone does not match "CN=pos-0001,O=Contoso".
// Attribute names are case-insensitive: CN, O, OU, C, L, ST (or S), STREET,
// POSTALCODE, SERIALNUMBER, DC, UID, emailAddress (or E), their long names
// (commonName, ...) or dotted OIDs. Values are compared case-insensitively
// after RFC 4514 unescaping ("\,", "\2c") and trimming of unescaped spaces;
// "#" hex values (how pkix prints emailAddress) are decoded. RDNs are
// separated by ',' or ';', multi-valued RDNs use '+' in any order.
//
// The certificate is not verified here: the server verifies the chain and
// the client's proof of possession. Only TLS <= 1.2 initial handshakes show
// it; under TLS 1.3 and in resumed sessions it is not observable.
package tlspeek
