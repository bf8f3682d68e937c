package events

// swedishTable maps the English event messages (and the refusal texts that become
// messages) to Swedish. {} marks a variable part, filled in the same order.
// A message with a ": " whose head is listed here is translated up to the
// ": " and keeps its tail (a host name, an error from the system).
func swedishTable() [][2]string {
	return [][2]string{
		// Lifecycle.
		{"storegate started", "storegate startad"},
		{"storegate stopped", "storegate stoppad"},
		{"service started", "tjänsten startad"},
		{"cannot start", "kan inte starta"},
		{"accept failed; pausing", "accept misslyckades; pausar"},

		// Policy.
		{"policy reloaded", "policyn omladdad"},
		{"first policy", "första policyn"},
		{"policy rejected; previous policy stays in force", "policyn avvisades; den föregående policyn gäller fortfarande"},
		{"policy refused, the last good policy stays in force", "policyn avvisades, den senaste godkända policyn gäller fortfarande"},
		{"policy refused: {} more problems not shown", "policyn avvisades: {} problem till visas inte"},
		{"cannot watch the policy file; changes need a restart", "kan inte bevaka policyfilen; ändringar kräver omstart"},

		// Tunnels and requests.
		{"tunnel closed", "tunneln stängd"},
		{"idle tunnel closed", "inaktiv tunnel stängd"},
		{"tunnel closed: the new policy no longer allows its target", "tunneln stängd: den nya policyn tillåter inte längre dess mål"},
		{"not a CONNECT request", "inte en CONNECT-begäran"},
		{"target not allowed", "målet är inte tillåtet"},
		{"host not allowed", "värden är inte tillåten"},
		{"port not allowed", "porten är inte tillåten"},
		{"address not allowed", "adressen är inte tillåten"},
		{"destination is this gateway", "destinationen är den här gatewayen"},
		{"upstream timeout", "tidsgränsen mot målet överskreds"},
		{"upstream unreachable", "målet går inte att nå"},
		{"host not found", "värden hittades inte"},
		{"relay refused", "reläet avvisade anslutningen"},
		{"gateway is shutting down", "gatewayen stängs av"},
		{"too many connections", "för många anslutningar"},
		{"too many connections from this client", "för många anslutningar från den här klienten"},
		{"request head not received in time", "begärans huvud kom inte i tid"},
		{"connection closed in the middle of the request head", "anslutningen stängdes mitt i begärans huvud"},
		{"this gateway only tunnels with CONNECT", "den här gatewayen tunnlar bara med CONNECT"},
		{"uplink is down", "upplänken är nere"},
		{"internal error", "internt fel"},
		{"request header fields too large", "begärans huvudfält är för stora"},
		{"too many header fields", "för många huvudfält"},
		{"malformed request line", "felaktig begäransrad"},
		{"HTTP version not supported; use HTTP/1.1", "HTTP-versionen stöds inte; använd HTTP/1.1"},
		{"malformed header field", "felaktigt huvudfält"},
		{"malformed CONNECT authority; want host:port", "felaktig CONNECT-adress; ange värd:port"},
		{"malformed port in CONNECT authority; want 1-65535", "felaktig port i CONNECT-adressen; ange 1-65535"},
		{"bare LF in request head", "ensam LF i begärans huvud"},
		{"obsolete line folding in header field", "föråldrad radbrytning i huvudfält"},
		{"malformed Content-Length", "felaktig Content-Length"},

		// TLS (the TLS listener and the handshake checks in tunnels).
		{"TLS listener handshake failed", "TLS-handskakningen på TLS-lyssnaren misslyckades"},
		{"client certificate not allowed", "klientcertifikatet är inte tillåtet"},
		{"TLS session verified", "TLS-sessionen verifierad"},
		{"TLS inspection failed", "TLS-inspektionen misslyckades"},
		{"no client certificate", "inget klientcertifikat"},
		{"{} is below the minimum {}", "{} är lägre än minimiversionen {}"},
		{"server name {} does not match the CONNECT host {}", "servernamnet {} matchar inte CONNECT-värden {}"},
		{"client certificate subject {} not allowed", "klientcertifikatets subjekt {} är inte tillåtet"},
		{"client certificate not observable (encrypted under {})", "klientcertifikatet kan inte observeras (krypterat med {})"},
		{"client certificate not observable (not sent in a resumed session)", "klientcertifikatet kan inte observeras (skickas inte i en återupptagen session)"},
		{"TLS session allowed; client certificate not observable (encrypted under {})", "TLS-sessionen tillåten; klientcertifikatet kan inte observeras (krypterat med {})"},
		{"TLS session allowed; client certificate not observable (not sent in a resumed session)", "TLS-sessionen tillåten; klientcertifikatet kan inte observeras (skickas inte i en återupptagen session)"},
		{"SSL 2.0-format ClientHello (offering {}) refused", "ClientHello i SSL 2.0-format (erbjuder {}) avvisad"},
		{"SSL {} refused", "SSL {} avvisad"},
		{"TLS {} refused", "TLS {} avvisad"},

		// Uplink.
		{"uplink down", "upplänken nere"},
		{"uplink up", "upplänken uppe"},

		{"uplink up again after {} down", "upplänken uppe igen efter {} nere"},

		// Spool.
		{"spool open: {} messages waiting", "spoolen öppnad: {} meddelanden väntar"},
		{"spool delivery works again", "spoolens leveranser fungerar igen"},
		{"spool delivery failing; retrying with backoff", "spoolens leveranser misslyckas; försöker igen med allt längre väntan"},
		{"spool dead letter: the receiver refused the message for good", "spoolen: mottagaren avvisade meddelandet för gott; det ligger bland de olevererbara"},
		{"spool submission refused", "inlämningen till spoolen avvisades"},
		{"spool directory unusable; submissions get 503 until it works", "spoolkatalogen går inte att använda; inlämningar får 503 tills den fungerar"},
		{"spool recovery", "spoolens återställning"},
		{"spool recovery: a record could not be decoded; kept as a dead letter", "spoolens återställning: en post kunde inte avkodas; sparad bland de olevererbara"},
		{"spool recovery: a record could not be decoded nor kept as a dead letter; left in place", "spoolens återställning: en post kunde varken avkodas eller sparas bland de olevererbara; ligger kvar"},
		{"spool destination not allowed", "spoolens destination är inte tillåten"},
		{"spool write failed; answering 503 until the disk accepts writes", "skrivningen till spoolen misslyckades; svarar 503 tills disken tar emot skrivningar"},
		{"spool full: dropped the {} oldest messages (spool.overflow: drop-oldest)", "spoolen är full: kastade de {} äldsta meddelandena (spool.overflow: drop-oldest)"},
		{"spool: dropped {} messages older than {} (spool.max_age)", "spoolen: kastade {} meddelanden äldre än {} (spool.max_age)"},
		{"spool: deleted the {} oldest dead letters (spool.dead_letter_max_bytes)", "spoolen: raderade de {} äldsta olevererbara meddelandena (spool.dead_letter_max_bytes)"},
		{"spool: cannot delete old dead letters (spool.dead_letter_max_bytes)", "spoolen: kan inte radera gamla olevererbara meddelanden (spool.dead_letter_max_bytes)"},

		// Serial console.
		{"console device not available; retrying", "konsolenheten är inte tillgänglig; försöker igen"},
		{"console device opened", "konsolenheten öppnad"},
		{"console device lost; waiting for it to return", "konsolenheten försvann; väntar på att den kommer tillbaka"},
	}
}
