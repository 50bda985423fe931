/*-------------------------------------------------------------------------
 *
 * subject.c
 *	  Keyed hashes of the identifiers of people erased on request
 *	  (whatsapp.wa_subject_erase).
 *
 * Erasure replaces a person's number, wa_id and business-scoped user ids
 * with keyed hashes where something must still recognize them: the
 * recipient of the message skeletons that are kept, and the opt-outs, so
 * that an erased number that had opted out stays blocked.  The hash is
 *
 *		"erased:" key_id ":" hex(HMAC-SHA256(subkey, identifier))
 *
 * where subkey is HMAC-SHA256(key, "whatsapp subject hash v1") for a key of
 * the key file (wa_derive_subkeys, seal.c): never the sealing key itself.
 * A phone number has few enough possible values that a plain hash would
 * be reversed by trying them all; without the key file, this one cannot.
 * The key id names the key the hash was made under, so that hashes made
 * before wa_rotate_key() are still found: the opt-out rule (recipient.c)
 * probes the hash under every key of the file.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(wa_subject_hash_sql);
PG_FUNCTION_INFO_V1(wa_subject_hashes_sql);

#define WA_SUBJECT_LABEL	"whatsapp subject hash v1"

/* The hash of identifier under one subkey, palloc'd. */
static char *
hash_under(const WaSubkey *k, const char *identifier)
{
	uint8		mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	StringInfoData s;

	if (HMAC(EVP_sha256(), k->raw, WA_SUBKEY_BYTES,
			 (const unsigned char *) identifier, strlen(identifier),
			 mac, &len) == NULL || len != 32)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the keyed hash of an identifier"),
				 errdetail("OpenSSL's HMAC-SHA256 failed."),
				 errhint("Check the server's OpenSSL library.")));
	initStringInfo(&s);
	appendStringInfo(&s, "%s%s:", WA_SUBJECT_HASH_PREFIX, k->id);
	for (unsigned int i = 0; i < len; i++)
		appendStringInfo(&s, "%02x", mac[i]);
	explicit_bzero(mac, sizeof(mac));
	return s.data;
}

/*
 * The hashes of identifier under every key of the key file, current key
 * first; 0 when there is no usable key file (then nothing can have been
 * hashed under a key that is there).  Never raises for the key file.
 */
int
wa_subject_hashes(const char *identifier, char ***out)
{
	WaSubkey   *keys;
	int			n = wa_derive_subkeys(WA_SUBJECT_LABEL, false, &keys);
	char	  **h;

	*out = NULL;
	if (n == 0)
		return 0;
	h = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
		h[i] = hash_under(&keys[i], identifier);
	explicit_bzero(keys, sizeof(WaSubkey) * n);
	pfree(keys);
	*out = h;
	return n;
}

/*
 * whatsapp._subject_hash(identifier text) RETURNS text: the hash under the
 * current key, for wa_subject_erase.  The key file is created if the rules
 * of wa_account_set allow it; every key file problem raises.
 */
Datum
wa_subject_hash_sql(PG_FUNCTION_ARGS)
{
	char	   *identifier = text_to_cstring(PG_GETARG_TEXT_PP(0));
	WaSubkey   *keys;
	int			n = wa_derive_subkeys(WA_SUBJECT_LABEL, true, &keys);
	char	   *h;

	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("the whatsapp key file holds no key"),
				 errhint("Restore the key file, or set whatsapp.key_file to its path and reload the configuration.")));
	h = hash_under(&keys[0], identifier);
	explicit_bzero(keys, sizeof(WaSubkey) * n);
	pfree(keys);
	PG_RETURN_TEXT_P(cstring_to_text(h));
}

/*
 * whatsapp._subject_hashes(identifiers text[]) RETURNS text[]: the hashes
 * of each identifier under every key of the key file (empty without one),
 * to find what wa_subject_erase left of these identifiers.
 */
Datum
wa_subject_hashes_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	Datum	   *res;
	int			nres = 0;
	int			cap;

	deconstruct_array(ids, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	cap = Max(nelems, 1) * 4;
	res = palloc(sizeof(Datum) * cap);
	for (int i = 0; i < nelems; i++)
	{
		char	  **h;
		int			n;

		if (nulls[i])
			continue;
		n = wa_subject_hashes(TextDatumGetCString(elems[i]), &h);
		if (nres + n > cap)
		{
			cap = (nres + n) * 2;
			res = repalloc(res, sizeof(Datum) * cap);
		}
		for (int j = 0; j < n; j++)
			res[nres++] = CStringGetTextDatum(h[j]);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(res, nres, TEXTOID, -1, false, TYPALIGN_INT));
}
