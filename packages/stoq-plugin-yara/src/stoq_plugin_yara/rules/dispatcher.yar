/*
 * The default dispatcher rules of stoq-plugin-yara: where a payload should go next.
 *
 * meta: plugin names the workers to run on a matching payload (comma separated); save = "False"
 * keeps the payload out of the destination archivers. Archives go to the decompress worker
 * (stoq-plugin-decompress) and e-mail messages to the smtp worker (stoq-plugin-smtp), whose
 * extracted payloads come back here in the next round.
 */

rule zip_archive : archive
{
    meta:
        description = "ZIP archive"
        plugin = "decompress"
    condition:
        uint32(0) == 0x04034B50 or uint32(0) == 0x06054B50
}

rule gzip_archive : archive
{
    meta:
        description = "gzip stream"
        plugin = "decompress"
    condition:
        uint16(0) == 0x8B1F and uint8(2) == 0x08
}

rule sevenzip_archive : archive
{
    meta:
        description = "7-Zip archive"
        plugin = "decompress"
    strings:
        $magic = { 37 7A BC AF 27 1C }
    condition:
        $magic at 0
}

rule rar_archive : archive
{
    meta:
        description = "RAR archive, format 4 or 5"
        plugin = "decompress"
    strings:
        $rar4 = { 52 61 72 21 1A 07 00 }
        $rar5 = { 52 61 72 21 1A 07 01 00 }
    condition:
        $rar4 at 0 or $rar5 at 0
}

rule tar_archive : archive
{
    meta:
        description = "POSIX (ustar) or GNU tar archive"
        plugin = "decompress"
    strings:
        $ustar = "ustar"
    condition:
        $ustar at 257
}

rule email_message : email
{
    meta:
        description = "E-mail message (RFC 5322 headers), or an mbox file"
        plugin = "smtp"
    strings:
        $mbox = "From "
        $received = "Received:" nocase
        $return_path = "Return-Path:" nocase
        $delivered_to = "Delivered-To:" nocase
        $from = "From:" nocase
        $message_id = "Message-ID:" nocase
        $mime_version = "MIME-Version:" nocase
        $header = /\n(Subject|To|Date|Message-ID|MIME-Version|Received):/ nocase
    condition:
        // A message header first, and another in the first 8 KiB: text that only starts with
        // "From:" is not enough. Spelled out, as "any of (...) at 0" needs YARA 4.3.
        ($mbox at 0 or $received at 0 or $return_path at 0 or $delivered_to at 0
         or $from at 0 or $message_id at 0 or $mime_version at 0)
        and $header in (0..8192)
}
