/*
 * fuzz_redact.c - libFuzzer target: log.c's redaction point (redact) and
 * the one-line folding (fold_controls) that every text log line gets.
 *
 * Input: byte 0 picks the secret's length (3..26), the next bytes are the
 * secret, the rest the text.  Properties: with no secret registered the
 * text comes back unchanged; with the secret registered neither the
 * output nor its folded form shows the secret or the secret's folded
 * form (what a reader of the log would see); folded output holds no
 * control character.  Secrets holding '*' are skipped (the mask itself
 * could rebuild them).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define TEXT_MAX	2048

static void
fold(char *s)
{
	fold_controls(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char	secret[32], fsecret[32], text[TEXT_MAX + 1];
	static char	out[4 * TEXT_MAX + 16];
	size_t		sl, tl, i;

	if (size < 1)
		return 0;
	sl = (size_t)(data[0] % 24) + 3;
	if (size < 1 + sl)
		return 0;
	for (i = 0; i < sl; i++) {
		secret[i] = data[1 + i] ? (char)data[1 + i] : 'x';
		if (secret[i] == '*')
			return 0;
	}
	secret[sl] = '\0';
	tl = size - 1 - sl;
	if (tl > TEXT_MAX)
		tl = TEXT_MAX;
	memcpy(text, data + 1 + sl, tl);
	text[tl] = '\0';		/* a NUL inside ends the text early */

	log_clear_secrets();
	redact(text, out, sizeof(out));
	if (strcmp(out, text) != 0)
		abort();
	log_add_secret(secret);
	redact(text, out, sizeof(out));
	if (strstr(out, secret) != NULL)
		abort();
	memcpy(fsecret, secret, sl + 1);
	fold(fsecret);
	fold(out);
	if (strstr(out, fsecret) != NULL)
		abort();
	for (i = 0; out[i]; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			abort();
	log_clear_secrets();
	return 0;
}
