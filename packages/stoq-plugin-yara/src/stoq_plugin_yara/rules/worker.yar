/*
 * The default worker rules of stoq-plugin-yara: what kind of file a payload is.
 *
 * Every rule is tagged with its family (executable, archive, script, document) so that results
 * can be filtered on tags. Offsets and magic numbers are the formats' own; uint16/uint32 read
 * little-endian, uint32be big-endian.
 */

// ---- executables ----------------------------------------------------------------------------

rule pe_executable : executable windows
{
    meta:
        description = "Windows PE executable: an MZ header whose e_lfanew points at a PE signature"
    condition:
        uint16(0) == 0x5A4D and uint32(uint32(0x3C)) == 0x00004550
}

rule dos_executable : executable windows
{
    meta:
        description = "MZ executable without a PE header (DOS program, or a truncated PE)"
    condition:
        uint16(0) == 0x5A4D and not pe_executable
}

rule embedded_pe : executable windows
{
    meta:
        description = "A PE image that does not start at offset 0 (appended, carved or dropped)"
    strings:
        // The DOS stub text sits at 0x4E in an image made by any common linker; it is a far
        // rarer anchor than the two bytes "MZ".
        $stub_dos = "This program cannot be run in DOS mode"
        $stub_win32 = "This program must be run under Win32"
    condition:
        for any i in (1..#stub_dos) : (
            @stub_dos[i] > 0x4E and uint16(@stub_dos[i] - 0x4E) == 0x5A4D
        ) or
        for any i in (1..#stub_win32) : (
            @stub_win32[i] > 0x4E and uint16(@stub_win32[i] - 0x4E) == 0x5A4D
        )
}

rule elf_executable : executable linux
{
    meta:
        description = "ELF object: executable, shared library or core file"
    condition:
        uint32(0) == 0x464C457F
}

rule macho_executable : executable macos
{
    meta:
        description = "Mach-O object, 32 or 64 bit, either byte order"
    condition:
        uint32(0) == 0xFEEDFACE or uint32(0) == 0xFEEDFACF or
        uint32be(0) == 0xFEEDFACE or uint32be(0) == 0xFEEDFACF
}

rule macho_universal : executable macos
{
    meta:
        description = "Mach-O universal (fat) binary"
    condition:
        // A Java class file shares the CAFEBABE magic; its version word is at least 45, while
        // a fat header counts a handful of architectures there.
        (uint32be(0) == 0xCAFEBABE or uint32be(0) == 0xCAFEBABF) and
        uint32be(4) > 0 and uint32be(4) < 20
}

// ---- archives -------------------------------------------------------------------------------

rule zip_archive : archive
{
    meta:
        description = "ZIP archive (also the container of OOXML, JAR, APK and ODF files)"
    condition:
        uint32(0) == 0x04034B50 or uint32(0) == 0x06054B50 or uint32(0) == 0x08074B50
}

rule gzip_archive : archive
{
    meta:
        description = "gzip stream (deflate)"
    condition:
        uint16(0) == 0x8B1F and uint8(2) == 0x08
}

rule sevenzip_archive : archive
{
    meta:
        description = "7-Zip archive"
    strings:
        $magic = { 37 7A BC AF 27 1C }
    condition:
        $magic at 0
}

rule rar_archive : archive
{
    meta:
        description = "RAR archive, format 4 or 5"
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
    strings:
        $ustar = "ustar"
    condition:
        $ustar at 257
}

rule bzip2_archive : archive
{
    meta:
        description = "bzip2 stream"
    condition:
        uint16(0) == 0x5A42 and uint8(2) == 0x68 and uint8(3) >= 0x31 and uint8(3) <= 0x39
}

rule xz_archive : archive
{
    meta:
        description = "xz stream"
    strings:
        $magic = { FD 37 7A 58 5A 00 }
    condition:
        $magic at 0
}

// ---- scripts --------------------------------------------------------------------------------

rule shebang_script : script
{
    meta:
        description = "Script with an interpreter line (#!)"
    condition:
        uint16(0) == 0x2123
}

rule powershell_script : script windows
{
    meta:
        description = "PowerShell: at least two markers of script execution or download"
    strings:
        $ps1 = "powershell" nocase ascii wide
        $ps2 = "Invoke-Expression" nocase ascii wide
        $ps3 = "IEX(" nocase ascii wide
        $ps4 = "IEX (" nocase ascii wide
        $ps5 = "-EncodedCommand" nocase ascii wide
        $ps6 = "FromBase64String" nocase ascii wide
        $ps7 = "Net.WebClient" nocase ascii wide
        $ps8 = "DownloadString" nocase ascii wide
        $ps9 = "DownloadFile" nocase ascii wide
        $ps10 = "-ExecutionPolicy" nocase ascii wide
        $ps11 = "Invoke-WebRequest" nocase ascii wide
        $ps12 = "Start-Process" nocase ascii wide
        $ps13 = "-WindowStyle Hidden" nocase ascii wide
    condition:
        2 of ($ps*)
}

rule vbscript : script windows
{
    meta:
        description = "VBScript or JScript driving Windows Script Host"
    strings:
        $wsh1 = "WScript.Shell" nocase ascii wide
        $wsh2 = "CreateObject(" nocase ascii wide
        $wsh3 = "Scripting.FileSystemObject" nocase ascii wide
        $wsh4 = "ActiveXObject(" nocase ascii wide
    condition:
        2 of ($wsh*)
}

// ---- documents ------------------------------------------------------------------------------

rule pdf_document : document
{
    meta:
        description = "PDF document (header within the first KiB, as readers accept)"
    strings:
        $header = "%PDF-"
    condition:
        $header in (0..1024)
}

rule ole_document : document
{
    meta:
        description = "OLE2 compound file: legacy Office documents (doc, xls, ppt), msi, msg"
    condition:
        uint32(0) == 0xE011CFD0 and uint32(4) == 0xE11AB1A1
}

rule ooxml_document : document
{
    meta:
        description = "Office Open XML document (docx, xlsx, pptx and their macro variants)"
    strings:
        $content_types = "[Content_Types].xml"
        $word = "word/"
        $excel = "xl/"
        $powerpoint = "ppt/"
    condition:
        zip_archive and $content_types and ($word or $excel or $powerpoint)
}

rule rtf_document : document
{
    meta:
        description = "Rich Text Format document"
    strings:
        $rtf = "{\\rtf"
    condition:
        $rtf at 0
}
