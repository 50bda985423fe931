/*-------------------------------------------------------------------------
 *
 * seal.c
 *	  Sealing and unsealing of account secrets, and the key file.
 *
 * The key file (whatsapp.key_file, relative to the data directory unless
 * absolute) holds text lines of 64 hexadecimal digits, each a 256-bit key.
 * Blank lines and lines starting with '#' are ignored.  The first key seals
 * new secrets; the keys after it are older ones, still accepted when
 * unsealing.  A key is known by its key id: the first 16 hexadecimal
 * digits of SHA-256("whatsapp-key-id:" || key bytes), a fingerprint from
 * which the key cannot be recovered.  The file must be a regular file
 * owned by the server's user with no group or world access.
 *
 * A secret is sealed with pgcrypto's pgp_sym_encrypt_bytea, found in the
 * schema that pg_extension records for pgcrypto and called through fmgr,
 * so that neither the key nor the secret ever appears in SQL text or in an
 * SPI parameter.  The password is the key as 64 lower-case hexadecimal
 * digits.  The sealed plaintext binds the secret to where it
 * belongs:
 *
 *		"wa1" NUL system_identifier NUL database_oid NUL account_id NUL
 *		field NUL secret
 *
 * and unsealing checks every part, so a ciphertext copied into another
 * account, another field, another database or another cluster is refused.
 * The key id is stored beside each ciphertext and selects the key.
 *
 * A key file is created only by wa_seal, and only when none exists and no
 * secret is sealed in this database: a new key opens nothing sealed under
 * an old one, so it is never minted over sealed secrets.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#define WA_KEY_BYTES		32
#define WA_KEY_HEX_LEN		(WA_KEY_BYTES * 2)
#define WA_KEY_ID_LEN		16
#define WA_KEY_FILE_MAX		(1024 * 1024)
#define WA_SEAL_MAGIC		"wa1"
#define WA_SECRET_MAX		65536

/* pgcrypto options: a random 256-bit key needs no iterated S2K. */
#define WA_PGP_OPTIONS		"cipher-algo=aes256, s2k-mode=1, compress-algo=0"

/*
 * Lock tag of the cluster-wide rotation lock: an advisory-type lock with
 * database 0, which no SQL-level advisory lock can name.
 */
#define WA_LOCK_KEY1		0x77687473	/* "whts" */
#define WA_LOCK_KEY2		0x6b657973	/* "keys" */

typedef struct WaKey
{
	uint8		raw[WA_KEY_BYTES];
	char		hex[WA_KEY_HEX_LEN + 1];	/* lower case */
	char		id[WA_KEY_ID_LEN + 1];
} WaKey;

/*
 * This process's copy of the key file, valid while the file's identity
 * (device, inode, size, modification and change times) is unchanged.
 */
typedef struct WaKeyRing
{
	bool		valid;
	char		path[MAXPGPATH];
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	time_t		mtime;
	time_t		ctime;
	int			nkeys;
	WaKey	   *keys;			/* in TopMemoryContext; keys[0] is current */
} WaKeyRing;

static WaKeyRing ring;
static bool exit_callback_registered = false;

/*
 * The subkeys last derived from the ring (wa_derive_subkeys), for one
 * label: every send that probes the hashed opt-outs needs them, and they
 * change only with the key file.  In TopMemoryContext; wiped with the ring.
 */
static WaSubkey *ring_subkeys = NULL;
static char ring_subkeys_label[64];

typedef enum KeyFileStatus
{
	KF_OK,
	KF_MISSING,					/* no such file */
	KF_UNREADABLE,				/* stat, open or read failed: see err */
	KF_NOT_REGULAR,
	KF_MODE,					/* group or world access */
	KF_OWNER,					/* not owned by the server's user */
	KF_MALFORMED,				/* see line: 0 means "no key at all" */
	KF_TOO_LARGE
} KeyFileStatus;

typedef struct KeyFileProblem
{
	int			err;			/* errno for KF_UNREADABLE */
	int			line;			/* line number for KF_MALFORMED */
} KeyFileProblem;

/* pgcrypto's functions, looked up for one call. */
typedef struct PgcryptoFuncs
{
	FmgrInfo	encrypt;
	FmgrInfo	decrypt;
} PgcryptoFuncs;

static void
wipe_ring(void)
{
	if (ring_subkeys != NULL)
	{
		explicit_bzero(ring_subkeys, sizeof(WaSubkey) * ring.nkeys);
		pfree(ring_subkeys);
		ring_subkeys = NULL;
	}
	if (ring.keys != NULL)
	{
		explicit_bzero(ring.keys, sizeof(WaKey) * ring.nkeys);
		pfree(ring.keys);
	}
	ring.keys = NULL;
	ring.nkeys = 0;
	ring.valid = false;
}

static void
wipe_ring_at_exit(int code, Datum arg)
{
	wipe_ring();
}

/* The key file's path: whatsapp.key_file, relative to the data directory. */
static void
key_file_path(char *path)
{
	const char *setting = wa_key_file;

	if (setting == NULL || setting[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("whatsapp.key_file is empty"),
				 errdetail("The key that seals access tokens and app secrets is read from the file this setting names."),
				 errhint("Set whatsapp.key_file to a file path, or reset it to its default \"whatsapp.key\", and reload the configuration."),
				 errhidestmt(true)));
	if (is_absolute_path(setting))
		strlcpy(path, setting, MAXPGPATH);
	else
		join_path_components(path, DataDir, setting);
	canonicalize_path(path);
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
wa_hex_decode(const char *hex, int nbytes, uint8 *out)
{
	for (int i = 0; i < nbytes; i++)
	{
		int			hi = hex_value(hex[2 * i]);
		int			lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8) ((hi << 4) | lo);
	}
	return true;
}

static void
hex_encode_lower(const uint8 *in, int len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < len; i++)
	{
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/*
 * Compute the key id of a raw key.  Returns false if OpenSSL fails, which
 * the caller reports after wiping what it holds.
 */
static bool
compute_key_id(const uint8 *raw, char *id)
{
	static const char prefix[] = "whatsapp-key-id:";
	EVP_MD_CTX *ctx;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	bool		ok;

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return false;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
		EVP_DigestUpdate(ctx, prefix, sizeof(prefix) - 1) == 1 &&
		EVP_DigestUpdate(ctx, raw, WA_KEY_BYTES) == 1 &&
		EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 &&
		digest_len >= WA_KEY_ID_LEN / 2;
	EVP_MD_CTX_free(ctx);
	if (ok)
		hex_encode_lower(digest, WA_KEY_ID_LEN / 2, id);
	explicit_bzero(digest, sizeof(digest));
	return ok;
}

static void
report_key_id_failure(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("could not compute a whatsapp key id"),
			 errdetail("OpenSSL's SHA-256 digest failed."),
			 errhint("Check the OpenSSL library the server uses, for example whether FIPS mode forbids SHA-256."),
			 errhidestmt(true)));
}

/* Mode and owner rules, on the result of stat() or fstat(). */
static KeyFileStatus
check_key_file_stat(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return KF_NOT_REGULAR;
	if ((st->st_mode & (S_IRWXG | S_IRWXO)) != 0)
		return KF_MODE;
	if (st->st_uid != geteuid())
		return KF_OWNER;
	return KF_OK;
}

/*
 * Parse the key file's text into a new key array in TopMemoryContext.
 * Returns KF_OK or KF_MALFORMED (with problem->line set).  Never leaves
 * key bytes behind in memory it gives up.
 */
static KeyFileStatus
parse_key_file(char *buf, size_t len, WaKey **keys_out, int *nkeys_out,
			   KeyFileProblem *problem)
{
	int			maxkeys = 1;
	int			nkeys = 0;
	int			lineno = 0;
	WaKey	   *keys;
	char	   *p = buf;
	char	   *end = buf + len;

	for (size_t i = 0; i < len; i++)
		if (buf[i] == '\n')
			maxkeys++;
	keys = MemoryContextAllocZero(TopMemoryContext, sizeof(WaKey) * maxkeys);

	while (p < end)
	{
		char	   *eol = memchr(p, '\n', end - p);
		char	   *s = p;
		char	   *e = eol ? eol : end;

		lineno++;
		p = eol ? eol + 1 : end;

		while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		if (s == e || *s == '#')
			continue;

		if (e - s != WA_KEY_HEX_LEN || !wa_hex_decode(s, WA_KEY_BYTES, keys[nkeys].raw))
			goto malformed;
		hex_encode_lower(keys[nkeys].raw, WA_KEY_BYTES, keys[nkeys].hex);
		if (!compute_key_id(keys[nkeys].raw, keys[nkeys].id))
		{
			explicit_bzero(keys, sizeof(WaKey) * maxkeys);
			pfree(keys);
			report_key_id_failure();
		}
		nkeys++;
	}

	if (nkeys == 0)
	{
		lineno = 0;
		goto malformed;
	}
	*keys_out = keys;
	*nkeys_out = nkeys;
	return KF_OK;

malformed:
	explicit_bzero(keys, sizeof(WaKey) * maxkeys);
	pfree(keys);
	problem->line = lineno;
	return KF_MALFORMED;
}

/*
 * Make "ring" hold the key file at "path", reading it again when it
 * changed.  Never raises for a missing or bad file: it returns why.
 */
static KeyFileStatus
load_key_file(const char *path, KeyFileProblem *problem)
{
	struct stat st;
	KeyFileStatus status;
	int			fd;
	char	   *buf;
	size_t		done = 0;
	WaKey	   *keys = NULL;
	int			nkeys = 0;

	memset(problem, 0, sizeof(*problem));

	if (!exit_callback_registered)
	{
		on_proc_exit(wipe_ring_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}

	if (stat(path, &st) != 0)
	{
		problem->err = errno;
		wipe_ring();
		return (errno == ENOENT || errno == ENOTDIR) ? KF_MISSING : KF_UNREADABLE;
	}
	status = check_key_file_stat(&st);
	if (status != KF_OK)
	{
		wipe_ring();
		return status;
	}
	if (ring.valid && strcmp(ring.path, path) == 0 &&
		ring.dev == st.st_dev && ring.ino == st.st_ino &&
		ring.size == st.st_size && ring.mtime == st.st_mtime &&
		ring.ctime == st.st_ctime)
		return KF_OK;

	wipe_ring();

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		problem->err = errno;
		return (errno == ENOENT) ? KF_MISSING : KF_UNREADABLE;
	}
	/* Check what was opened, not what was named a moment ago. */
	if (fstat(fd, &st) != 0)
	{
		problem->err = errno;
		CloseTransientFile(fd);
		return KF_UNREADABLE;
	}
	status = check_key_file_stat(&st);
	if (status == KF_OK && st.st_size > WA_KEY_FILE_MAX)
		status = KF_TOO_LARGE;
	if (status != KF_OK)
	{
		CloseTransientFile(fd);
		return status;
	}

	buf = palloc(st.st_size + 1);
	while (done < (size_t) st.st_size)
	{
		ssize_t		n = read(fd, buf + done, st.st_size - done);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			problem->err = errno;
			explicit_bzero(buf, st.st_size + 1);
			pfree(buf);
			CloseTransientFile(fd);
			return KF_UNREADABLE;
		}
		if (n == 0)
			break;
		done += n;
	}
	CloseTransientFile(fd);
	buf[done] = '\0';

	status = parse_key_file(buf, done, &keys, &nkeys, problem);
	explicit_bzero(buf, st.st_size + 1);
	pfree(buf);
	if (status != KF_OK)
		return status;

	strlcpy(ring.path, path, MAXPGPATH);
	ring.dev = st.st_dev;
	ring.ino = st.st_ino;
	ring.size = st.st_size;
	ring.mtime = st.st_mtime;
	ring.ctime = st.st_ctime;
	ring.keys = keys;
	ring.nkeys = nkeys;
	ring.valid = true;
	return KF_OK;
}

/* Raise the ERROR that fits a key file problem (other than KF_MISSING). */
static void
report_key_file_problem(const char *path, KeyFileStatus status,
						const KeyFileProblem *problem)
{
	switch (status)
	{
		case KF_OK:
			return;
		case KF_MISSING:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FILE),
					 errmsg("whatsapp key file \"%s\" does not exist", path),
					 errhint("Restore the key file, or set whatsapp.key_file to its path and reload the configuration."),
					 errhidestmt(true)));
			break;
		case KF_UNREADABLE:
			errno = problem->err;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read whatsapp key file \"%s\": %m", path),
					 errhint("Make the key file readable by the operating system user that runs the server."),
					 errhidestmt(true)));
			break;
		case KF_NOT_REGULAR:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("whatsapp key file \"%s\" is not a regular file", path),
					 errhint("Set whatsapp.key_file to the path of a regular file and reload the configuration."),
					 errhidestmt(true)));
			break;
		case KF_MODE:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("whatsapp key file \"%s\" is accessible by group or others", path),
					 errdetail("The key file must be readable and writable by its owner only, so it is not used."),
					 errhint("Run chmod 600 %s, then call the function again.", path),
					 errhidestmt(true)));
			break;
		case KF_OWNER:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("whatsapp key file \"%s\" is not owned by the user that runs the server", path),
					 errdetail("A key file that another user owns could be replaced by that user, so it is not used."),
					 errhint("Make the operating system user that runs the server the owner of %s (chown), keeping mode 0600.", path),
					 errhidestmt(true)));
			break;
		case KF_MALFORMED:
			if (problem->line > 0)
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("whatsapp key file \"%s\" is malformed", path),
						 errdetail("Line %d is neither a key of 64 hexadecimal digits, a comment starting with \"#\", nor blank.",
								   problem->line),
						 errhint("Restore the key file from a backup."),
						 errhidestmt(true)));
			else
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("whatsapp key file \"%s\" is malformed", path),
						 errdetail("The file holds no key line of 64 hexadecimal digits."),
						 errhint("Restore the key file from a backup; remove an empty file only when no secret was sealed with it."),
						 errhidestmt(true)));
			break;
		case KF_TOO_LARGE:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("whatsapp key file \"%s\" is too large", path),
					 errdetail("A key file holds at most %d bytes.", WA_KEY_FILE_MAX),
					 errhint("Check that whatsapp.key_file names the key file and not another file."),
					 errhidestmt(true)));
			break;
	}
}

/*
 * Is any secret sealed in this database?  Used before a key file is
 * created: a new key opens nothing sealed under a lost one.
 */
static bool
secrets_are_sealed(void)
{
	bool		found;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not connect to SPI to look for sealed secrets")));
	rc = SPI_execute("SELECT 1 FROM whatsapp.account"
					 " WHERE access_token IS NOT NULL OR app_secret IS NOT NULL"
					 " OR verify_token IS NOT NULL LIMIT 1",
					 false, 1);
	if (rc != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not look for sealed secrets: %s",
						SPI_result_code_string(rc))));
	found = SPI_processed > 0;
	SPI_finish();
	return found;
}

/* fsync a directory, raising an ERROR (never a PANIC) on failure. */
static void
fsync_directory_of(const char *path)
{
	char		dir[MAXPGPATH];

	strlcpy(dir, path, MAXPGPATH);
	get_parent_directory(dir);
	if (dir[0] == '\0')
		strlcpy(dir, ".", MAXPGPATH);
	(void) fsync_fname_ext(dir, true, false, ERROR);
}

/*
 * Write "content" to a new file "tmp" with mode 0600 and fsync it.  On
 * failure the file is removed and an ERROR raised.  A stale file of that
 * name (left by a crashed process with the same pid) is removed first.
 */
static void
write_private_file(const char *tmp, const char *content, size_t len)
{
	int			fd;
	size_t		done = 0;
	int			save_errno;

	fd = OpenTransientFilePerm(tmp, O_CREAT | O_EXCL | O_WRONLY | PG_BINARY,
							   S_IRUSR | S_IWUSR);
	if (fd < 0 && errno == EEXIST)
	{
		if (unlink(tmp) != 0 && errno != ENOENT)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not remove stale file \"%s\": %m", tmp),
					 errhint("Remove the file by hand; it is left over from an interrupted key file update."),
					 errhidestmt(true)));
		fd = OpenTransientFilePerm(tmp, O_CREAT | O_EXCL | O_WRONLY | PG_BINARY,
								   S_IRUSR | S_IWUSR);
	}
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp),
				 errhint("Check that the server's user may create files in the key file's directory."),
				 errhidestmt(true)));

	/* The umask cannot add bits, but make the mode explicit anyway. */
	if (fchmod(fd, S_IRUSR | S_IWUSR) != 0)
		goto fail;
	while (done < len)
	{
		ssize_t		n = write(fd, content + done, len - done);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (n == 0)
		{
			errno = ENOSPC;
			goto fail;
		}
		done += n;
	}
	if (pg_fsync(fd) != 0)
		goto fail;
	if (CloseTransientFile(fd) != 0)
	{
		fd = -1;
		goto fail;
	}
	return;

fail:
	save_errno = errno;
	if (fd >= 0)
		CloseTransientFile(fd);
	unlink(tmp);
	errno = save_errno;
	ereport(ERROR,
			(errcode_for_file_access(),
			 errmsg("could not write file \"%s\": %m", tmp),
			 errhint("Check the free space and permissions of the key file's directory."),
			 errhidestmt(true)));
}

static const char key_file_comment[] =
"# whatsapp key file: the keys that seal access tokens and app secrets.\n"
"# Keep it private (mode 0600) and keep a copy with the backups: sealed\n"
"# secrets cannot be opened without it.  The first key seals new secrets.\n"
"# Keys after it are older keys: secrets sealed under them, in any database\n"
"# of this cluster, are still opened with them.  Remove an older key only\n"
"# when every database has run whatsapp.wa_rotate_key() since it was added.\n";

/* A new random key, with its hex form and key id. */
static void
generate_key(WaKey *key)
{
	if (RAND_bytes(key->raw, WA_KEY_BYTES) != 1)
	{
		explicit_bzero(key, sizeof(WaKey));
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random whatsapp key"),
				 errdetail("OpenSSL's random number generator failed."),
				 errhint("Check that the server can read the operating system's random source."),
				 errhidestmt(true)));
	}
	hex_encode_lower(key->raw, WA_KEY_BYTES, key->hex);
	if (!compute_key_id(key->raw, key->id))
	{
		explicit_bzero(key, sizeof(WaKey));
		report_key_id_failure();
	}
}

/* Wipe a key file's text and a new key, keeping the key's id. */
static void
wipe_key_material(StringInfo content, WaKey *key)
{
	explicit_bzero(content->data, content->maxlen);
	pfree(content->data);
	pfree(content);
	explicit_bzero(key->raw, sizeof(key->raw));
	explicit_bzero(key->hex, sizeof(key->hex));
}

/*
 * Create the key file at "path" with a new key, atomically: write a
 * private temporary file, then link() it into place.  If another process
 * won the race, its file is kept and ours dropped.
 */
static void
create_key_file(const char *path)
{
	WaKey		key;
	char		tmp[MAXPGPATH];
	StringInfo	content;
	volatile bool created = false;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int) MyProcPid);
	generate_key(&key);
	content = makeStringInfo();

	PG_TRY();
	{
		appendStringInfoString(content, key_file_comment);
		appendStringInfo(content, "%s\n", key.hex);
		write_private_file(tmp, content->data, content->len);
		if (link(tmp, path) == 0)
			created = true;
		else if (errno != EEXIST)
		{
			int			save_errno = errno;

			unlink(tmp);
			errno = save_errno;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create whatsapp key file \"%s\": %m", path),
					 errhint("Check that the key file's directory exists, is writable by the server's user and supports hard links."),
					 errhidestmt(true)));
		}
		if (unlink(tmp) != 0 && errno != ENOENT)
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("could not remove temporary file \"%s\": %m", tmp),
					 errhint("Remove the file by hand; it holds a copy of the key.")));
		fsync_directory_of(path);
	}
	PG_CATCH();
	{
		wipe_key_material(content, &key);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wipe_key_material(content, &key);

	if (created)
		ereport(LOG,
				(errmsg("whatsapp created key file \"%s\" with key id %s",
						path, key.id)));
}

/*
 * The OID of pgcrypto's schema, or InvalidOid when pgcrypto is not
 * installed.  pgcrypto is relocatable, so pg_extension is asked.
 */
static Oid
pgcrypto_schema(Oid *extoid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	*extoid = get_extension_oid("pgcrypto", true);
	if (!OidIsValid(*extoid))
		return InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(*extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

/*
 * Look up one pgcrypto function (bytea, text, text) in pgcrypto's schema,
 * by the schema's OID: no search_path and no schema privilege check are
 * involved, and only a function that belongs to pgcrypto is accepted.
 */
static bool
lookup_pgcrypto_func(Oid extoid, Oid nsp, const char *fname, FmgrInfo *finfo)
{
	Oid			argtypes[3] = {BYTEAOID, TEXTOID, TEXTOID};
	oidvector  *args = buildoidvector(argtypes, 3);
	Oid			fn;

	fn = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
						 CStringGetDatum(fname), PointerGetDatum(args),
						 ObjectIdGetDatum(nsp));
	pfree(args);
	if (!OidIsValid(fn))
		return false;
	if (getExtensionOfObject(ProcedureRelationId, fn) != extoid)
		return false;
	fmgr_info(fn, finfo);
	return true;
}

static bool
lookup_pgcrypto(PgcryptoFuncs *funcs)
{
	Oid			extoid;
	Oid			nsp = pgcrypto_schema(&extoid);

	if (!OidIsValid(nsp))
		return false;
	return lookup_pgcrypto_func(extoid, nsp, "pgp_sym_encrypt_bytea",
								&funcs->encrypt) &&
		lookup_pgcrypto_func(extoid, nsp, "pgp_sym_decrypt_bytea",
							 &funcs->decrypt);
}

static void
report_no_pgcrypto(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("extension \"pgcrypto\" is not installed in this database"),
			 errdetail("The whatsapp extension seals secrets with pgcrypto's pgp_sym_encrypt_bytea and pgp_sym_decrypt_bytea."),
			 errhint("Run CREATE EXTENSION pgcrypto."),
			 errhidestmt(true)));
}

/* A text datum of the key's hex form; the caller wipes it. */
static text *
password_text(const WaKey *key)
{
	return cstring_to_text_with_len(key->hex, WA_KEY_HEX_LEN);
}

static void
wipe_varlena(struct varlena *v)
{
	if (v != NULL)
	{
		explicit_bzero(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
		pfree(v);
	}
}

/*
 * The binding prefix of the sealed plaintext: everything before the
 * secret, NULs included.  Returns its length; buf holds at least 128 bytes.
 */
static int
binding_prefix(char *buf, size_t bufsize, int32 account_id, const char *field)
{
	int			len;

	len = snprintf(buf, bufsize, "%s%c" UINT64_FORMAT "%c%u%c%d%c%s%c",
				   WA_SEAL_MAGIC, '\0',
				   GetSystemIdentifier(), '\0',
				   MyDatabaseId, '\0',
				   account_id, '\0',
				   field, '\0');
	if (len < 0 || (size_t) len >= bufsize)
		elog(ERROR, "whatsapp seal binding does not fit its buffer");
	return len;
}

bytea *
wa_seal(int32 account_id, const char *field, const char *secret,
		char **key_id)
{
	char		path[MAXPGPATH];
	KeyFileStatus status;
	KeyFileProblem problem;
	PgcryptoFuncs funcs;
	char		prefix[256];
	int			prefix_len;
	size_t		secret_len;
	bytea	   *volatile plain = NULL;
	text	   *volatile password = NULL;
	volatile Datum sealed = (Datum) 0;
	char	   *id;

	if (field == NULL || field[0] == '\0' || strlen(field) > 64)
		elog(ERROR, "invalid whatsapp seal field");
	secret_len = strlen(secret);
	if (secret_len > WA_SECRET_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret is too long to seal"),
				 errdetail("A secret holds at most %d bytes.", WA_SECRET_MAX),
				 errhint("Pass the credential exactly as Meta shows it."),
				 errhidestmt(true)));

	/* pgcrypto first: without it, creating a key would be for nothing. */
	if (!lookup_pgcrypto(&funcs))
		report_no_pgcrypto();

	key_file_path(path);
	status = load_key_file(path, &problem);
	if (status == KF_MISSING)
	{
		if (secrets_are_sealed())
		{
			/* Another backend may have created it meanwhile. */
			status = load_key_file(path, &problem);
			if (status == KF_MISSING)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_FILE),
						 errmsg("whatsapp key file \"%s\" is missing", path),
						 errdetail("Secrets are sealed in this database, and a new key would not open them, so no new key file is created."),
						 errhint("Restore the key file, or set whatsapp.key_file to its path and reload the configuration."),
						 errhidestmt(true)));
		}
		else
		{
			create_key_file(path);
			status = load_key_file(path, &problem);
		}
	}
	report_key_file_problem(path, status, &problem);

	/* ring.keys[0] is the current key */
	id = pstrdup(ring.keys[0].id);
	prefix_len = binding_prefix(prefix, sizeof(prefix), account_id, field);

	PG_TRY();
	{
		plain = palloc(VARHDRSZ + prefix_len + secret_len);
		SET_VARSIZE(plain, VARHDRSZ + prefix_len + secret_len);
		memcpy(VARDATA(plain), prefix, prefix_len);
		memcpy(VARDATA(plain) + prefix_len, secret, secret_len);
		password = password_text(&ring.keys[0]);

		sealed = FunctionCall3Coll(&funcs.encrypt, InvalidOid,
								   PointerGetDatum(plain),
								   PointerGetDatum(password),
								   CStringGetTextDatum(WA_PGP_OPTIONS));
	}
	PG_CATCH();
	{
		wipe_varlena((struct varlena *) plain);
		wipe_varlena((struct varlena *) password);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wipe_varlena((struct varlena *) plain);
	wipe_varlena((struct varlena *) password);

	*key_id = id;
	return DatumGetByteaPP(sealed);
}

/* Is this an error that must not be taken for a failed decryption? */
static bool
error_must_propagate(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_PROGRAM_LIMIT_EXCEEDED) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION) ||
		category == ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR);
}

/*
 * Call pgp_sym_decrypt_bytea inside a subtransaction, so that its ERROR
 * for corrupt data (pgcrypto raises rather than returns) is caught cleanly
 * and its resources released.  Returns NULL when decryption failed.
 * Nothing is copied from the caught error; it never holds key material.
 * A query cancel, shutdown or out-of-memory error is raised again.
 */
static bytea *
decrypt_guarded(FmgrInfo *decrypt, bytea *sealed, text *password)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	bytea	   *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		Datum		d;

		d = FunctionCall3Coll(decrypt, InvalidOid,
							  PointerGetDatum(sealed),
							  PointerGetDatum(password),
							  CStringGetTextDatum(WA_PGP_OPTIONS));
		result = DatumGetByteaPP(d);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		int			code;

		MemoryContextSwitchTo(oldcontext);
		code = geterrcode();
		if (error_must_propagate(code))
		{
			ErrorData  *edata = CopyErrorData();

			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
			ReThrowError(edata);
		}
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		result = NULL;
	}
	PG_END_TRY();

	return result;
}

/*
 * Check the binding of a decrypted plaintext and extract the secret.
 */
static WaUnsealResult
check_binding(const char *data, size_t len, int32 account_id,
			  const char *field, bool check_database, char **secret)
{
	const char *parts[5];
	const char *p = data;
	const char *end = data + len;
	char		buf[32];
	size_t		secret_len;

	/* five NUL-terminated parts, then the secret */
	for (int i = 0; i < 5; i++)
	{
		const char *nul = memchr(p, '\0', end - p);

		if (nul == NULL)
			return WA_UNSEAL_CORRUPT;
		parts[i] = p;
		p = nul + 1;
	}
	secret_len = end - p;
	if (memchr(p, '\0', secret_len) != NULL)
		return WA_UNSEAL_CORRUPT;
	if (strcmp(parts[0], WA_SEAL_MAGIC) != 0)
		return WA_UNSEAL_CORRUPT;

	snprintf(buf, sizeof(buf), "%d", account_id);
	if (strcmp(parts[3], buf) != 0 || strcmp(parts[4], field) != 0)
		return WA_UNSEAL_BINDING;
	if (check_database)
	{
		snprintf(buf, sizeof(buf), UINT64_FORMAT, GetSystemIdentifier());
		if (strcmp(parts[1], buf) != 0)
			return WA_UNSEAL_BINDING;
		snprintf(buf, sizeof(buf), "%u", MyDatabaseId);
		if (strcmp(parts[2], buf) != 0)
			return WA_UNSEAL_BINDING;
	}

	*secret = palloc(secret_len + 1);
	memcpy(*secret, p, secret_len);
	(*secret)[secret_len] = '\0';
	return WA_UNSEAL_OK;
}

WaUnsealResult
wa_unseal(bytea *sealed, const char *key_id, int32 account_id,
		  const char *field, bool check_database, char **secret)
{
	char		path[MAXPGPATH];
	KeyFileStatus status;
	KeyFileProblem problem;
	PgcryptoFuncs funcs;
	const WaKey *key = NULL;
	text	   *volatile password;
	bytea	   *volatile plain = NULL;
	WaUnsealResult result;

	*secret = NULL;
	if (sealed == NULL || field == NULL)
		return WA_UNSEAL_CORRUPT;

	if (wa_key_file == NULL || wa_key_file[0] == '\0')
		return WA_UNSEAL_NO_KEY;
	key_file_path(path);
	status = load_key_file(path, &problem);
	switch (status)
	{
		case KF_OK:
			break;
		case KF_MISSING:
		case KF_UNREADABLE:
			return WA_UNSEAL_NO_KEY;
		default:
			return WA_UNSEAL_BAD_KEY_FILE;
	}

	if (key_id == NULL)
		return WA_UNSEAL_WRONG_KEY;
	for (int i = 0; i < ring.nkeys; i++)
	{
		if (strcmp(ring.keys[i].id, key_id) == 0)
		{
			key = &ring.keys[i];
			break;
		}
	}
	if (key == NULL)
		return WA_UNSEAL_WRONG_KEY;

	if (!lookup_pgcrypto(&funcs))
		return WA_UNSEAL_NO_PGCRYPTO;

	password = password_text(key);
	PG_TRY();
	{
		plain = decrypt_guarded(&funcs.decrypt, sealed, password);
	}
	PG_CATCH();
	{
		wipe_varlena((struct varlena *) password);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wipe_varlena((struct varlena *) password);

	if (plain == NULL)
		return WA_UNSEAL_CORRUPT;

	result = check_binding(VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain),
						   account_id, field, check_database, secret);
	wipe_varlena((struct varlena *) plain);
	return result;
}

const char *
wa_unseal_result_text(WaUnsealResult r)
{
	switch (r)
	{
		case WA_UNSEAL_OK:
			return "The secret was unsealed.";
		case WA_UNSEAL_NO_KEY:
			return "The whatsapp key file is missing or cannot be read.";
		case WA_UNSEAL_BAD_KEY_FILE:
			return "The whatsapp key file is not used because it is accessible by group or others, not owned by the server's user, or malformed.";
		case WA_UNSEAL_WRONG_KEY:
			return "No key in the whatsapp key file has the key id the secret was sealed with.";
		case WA_UNSEAL_BINDING:
			return "The sealed secret belongs to another account, field, database or cluster.";
		case WA_UNSEAL_CORRUPT:
			return "The sealed secret could not be decrypted.";
		case WA_UNSEAL_NO_PGCRYPTO:
			return "The pgcrypto extension is not installed in this database.";
	}
	return "The secret could not be unsealed.";
}

const char *
wa_unseal_result_hint(WaUnsealResult r)
{
	switch (r)
	{
		case WA_UNSEAL_OK:
			return NULL;
		case WA_UNSEAL_NO_KEY:
			return "Restore the key file, or set whatsapp.key_file to its path and reload the configuration.";
		case WA_UNSEAL_BAD_KEY_FILE:
			return "Make the key file a valid key file owned by the server's user with mode 0600 (chmod 600).";
		case WA_UNSEAL_WRONG_KEY:
			return "Restore the key file that sealed the secret, or set the secret again with whatsapp.wa_account_set().";
		case WA_UNSEAL_BINDING:
			return "If this database is a copy that should deliver, run whatsapp.wa_rebind(); otherwise set the secret again with whatsapp.wa_account_set().";
		case WA_UNSEAL_CORRUPT:
			return "Set the secret again with whatsapp.wa_account_set().";
		case WA_UNSEAL_NO_PGCRYPTO:
			return "Run CREATE EXTENSION pgcrypto.";
	}
	return NULL;
}

void
wa_wipe(char *secret)
{
	if (secret != NULL)
	{
		explicit_bzero(secret, strlen(secret));
		pfree(secret);
	}
}

char *
wa_rotate_key_file(void)
{
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH];
	KeyFileStatus status;
	KeyFileProblem problem;
	LOCKTAG		tag;
	WaKey		key;
	StringInfo	content;
	char	   *id;

	/*
	 * One rotation at a time in the whole cluster, until commit: two
	 * rotations racing would each drop the other's new key.
	 */
	SET_LOCKTAG_ADVISORY(tag, InvalidOid, WA_LOCK_KEY1, WA_LOCK_KEY2, 3);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	key_file_path(path);
	status = load_key_file(path, &problem);
	if (status == KF_MISSING)
	{
		if (secrets_are_sealed())
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FILE),
					 errmsg("whatsapp key file \"%s\" is missing", path),
					 errdetail("Secrets are sealed in this database, and a new key would not open them, so no new key file is created."),
					 errhint("Restore the key file, or set whatsapp.key_file to its path and reload the configuration."),
					 errhidestmt(true)));
		create_key_file(path);
		status = load_key_file(path, &problem);
		report_key_file_problem(path, status, &problem);
		return pstrdup(ring.keys[0].id);
	}
	report_key_file_problem(path, status, &problem);

	generate_key(&key);
	id = pstrdup(key.id);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int) MyProcPid);

	content = makeStringInfo();
	PG_TRY();
	{
		appendStringInfoString(content, key_file_comment);
		appendStringInfo(content, "%s\n", key.hex);
		for (int i = 0; i < ring.nkeys; i++)
			appendStringInfo(content, "%s\n", ring.keys[i].hex);

		write_private_file(tmp, content->data, content->len);
		if (rename(tmp, path) != 0)
		{
			int			save_errno = errno;

			unlink(tmp);
			errno = save_errno;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not replace whatsapp key file \"%s\": %m", path),
					 errhint("Check that the server's user may write to the key file's directory."),
					 errhidestmt(true)));
		}
		fsync_directory_of(path);
	}
	PG_CATCH();
	{
		wipe_key_material(content, &key);
		wipe_ring();
		PG_RE_THROW();
	}
	PG_END_TRY();
	wipe_key_material(content, &key);
	/* read the file again at next use */
	wipe_ring();

	ereport(LOG,
			(errmsg("whatsapp wrote a new key to \"%s\" with key id %s; older keys were kept",
					path, id)));
	return id;
}

/* ----------
 * Subkeys
 *
 * A subkey for another purpose than sealing (the keyed hashes of erased
 * people, subject.c) is HMAC-SHA256(key, label) of a key of the key file:
 * the key itself never leaves this file and is never used for two
 * purposes.  A subkey is derived from every key of the file, current key
 * first, so that what was hashed under an older key is still recognized
 * after wa_rotate_key().  The subkeys of the last label asked for are kept
 * beside the ring and wiped with it, when the key file changes.
 * ----------
 */

/*
 * Fill *out (palloc'd, caller wipes with explicit_bzero) with the subkeys
 * for "label", one per key of the key file, and return how many.  With
 * create, the key file is loaded or created under the rules of wa_seal and
 * every problem raises an ERROR.  Without it, nothing raises: a missing,
 * unreadable or malformed key file gives 0.
 */
int
wa_derive_subkeys(const char *label, bool create, WaSubkey **out)
{
	char		path[MAXPGPATH];
	KeyFileStatus status;
	KeyFileProblem problem;
	WaSubkey   *keys;

	*out = NULL;
	if (!create && (wa_key_file == NULL || wa_key_file[0] == '\0'))
		return 0;
	key_file_path(path);
	status = load_key_file(path, &problem);
	if (create && status == KF_MISSING)
	{
		if (secrets_are_sealed())
			status = load_key_file(path, &problem);
		else
		{
			create_key_file(path);
			status = load_key_file(path, &problem);
		}
	}
	if (status != KF_OK)
	{
		if (create)
			report_key_file_problem(path, status, &problem);
		return 0;
	}

	/* The ring is the one they were derived from: wipe_ring() drops them. */
	if (ring_subkeys != NULL && strcmp(ring_subkeys_label, label) == 0)
	{
		keys = palloc(sizeof(WaSubkey) * ring.nkeys);
		memcpy(keys, ring_subkeys, sizeof(WaSubkey) * ring.nkeys);
		*out = keys;
		return ring.nkeys;
	}

	keys = palloc0(sizeof(WaSubkey) * ring.nkeys);
	for (int i = 0; i < ring.nkeys; i++)
	{
		unsigned int len = 0;

		if (HMAC(EVP_sha256(), ring.keys[i].raw, WA_KEY_BYTES,
				 (const unsigned char *) label, strlen(label),
				 keys[i].raw, &len) == NULL || len != WA_SUBKEY_BYTES)
		{
			explicit_bzero(keys, sizeof(WaSubkey) * ring.nkeys);
			pfree(keys);
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not derive a whatsapp subkey"),
					 errdetail("OpenSSL's HMAC-SHA256 failed."),
					 errhint("Check the server's OpenSSL library.")));
		}
		strlcpy(keys[i].id, ring.keys[i].id, sizeof(keys[i].id));
	}
	if (strlen(label) < sizeof(ring_subkeys_label))
	{
		if (ring_subkeys != NULL)
		{
			explicit_bzero(ring_subkeys, sizeof(WaSubkey) * ring.nkeys);
			pfree(ring_subkeys);
		}
		ring_subkeys = MemoryContextAlloc(TopMemoryContext, sizeof(WaSubkey) * ring.nkeys);
		memcpy(ring_subkeys, keys, sizeof(WaSubkey) * ring.nkeys);
		strlcpy(ring_subkeys_label, label, sizeof(ring_subkeys_label));
	}
	*out = keys;
	return ring.nkeys;
}
