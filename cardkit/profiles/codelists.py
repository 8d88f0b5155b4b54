"""Code lists used by cardholder records: gender, ethnicity, administrative regions, MRZ states.

Every list is an immutable mapping ``code -> name``. Profiles refer to them by the names in
:data:`CODE_LISTS` (``kind = "code"``, ``list = "ethnicity"``).

Sources (all public):

- GB/T 2261.1-2003 (人的性别代码) for :data:`GENDER`.
- GB 3304-1991 (中国各民族名称的罗马字母拼写法和代码) for :data:`ETHNICITY`, with the current names of codes
  36 (毛南族) and 46 (德昂族); codes 97 and 98 as used by Chinese civil registration systems.
- GB/T 2260 (中华人民共和国行政区划代码) for :data:`PROVINCES` (province-level divisions) and the small
  selection of prefecture-level cities and districts in :data:`CITIES` / :data:`DISTRICTS`.
- ISO 3166-1 alpha-3 and ICAO Doc 9303 Part 3 §5 (codes for states and organisations in the MRZ) for
  :data:`MRZ_STATES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from cardkit.errors import ProfileError

__all__ = [
    "CITIES",
    "CODE_LISTS",
    "DISTRICTS",
    "ETHNICITY",
    "GENDER",
    "MRZ_STATES",
    "PROVINCES",
    "code_list",
]


def _frozen(items: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(items)


# GB/T 2261.1-2003 §3, table 1: codes for the sex of a person.
GENDER: Mapping[str, str] = _frozen({
    "0": "未知的性别",
    "1": "男性",
    "2": "女性",
    "9": "未说明的性别",
})

# GB 3304-1991 table 1: the 56 nationalities (two-digit numeric codes), plus 97/98 as used by
# civil registration (其他 / 外国血统中国籍人士).
ETHNICITY: Mapping[str, str] = _frozen({
    "01": "汉族", "02": "蒙古族", "03": "回族", "04": "藏族", "05": "维吾尔族",
    "06": "苗族", "07": "彝族", "08": "壮族", "09": "布依族", "10": "朝鲜族",
    "11": "满族", "12": "侗族", "13": "瑶族", "14": "白族", "15": "土家族",
    "16": "哈尼族", "17": "哈萨克族", "18": "傣族", "19": "黎族", "20": "傈僳族",
    "21": "佤族", "22": "畲族", "23": "高山族", "24": "拉祜族", "25": "水族",
    "26": "东乡族", "27": "纳西族", "28": "景颇族", "29": "柯尔克孜族", "30": "土族",
    "31": "达斡尔族", "32": "仫佬族", "33": "羌族", "34": "布朗族", "35": "撒拉族",
    "36": "毛南族", "37": "仡佬族", "38": "锡伯族", "39": "阿昌族", "40": "普米族",
    "41": "塔吉克族", "42": "怒族", "43": "乌孜别克族", "44": "俄罗斯族", "45": "鄂温克族",
    "46": "德昂族", "47": "保安族", "48": "裕固族", "49": "京族", "50": "塔塔尔族",
    "51": "独龙族", "52": "鄂伦春族", "53": "赫哲族", "54": "门巴族", "55": "珞巴族",
    "56": "基诺族",
    "97": "其他",
    "98": "外国血统中国籍人士",
})

# GB/T 2260: province-level administrative divisions (first two digits of every region code).
PROVINCES: Mapping[str, str] = _frozen({
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区",
    "21": "辽宁省", "22": "吉林省", "23": "黑龙江省",
    "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省", "35": "福建省", "36": "江西省",
    "37": "山东省",
    "41": "河南省", "42": "湖北省", "43": "湖南省", "44": "广东省", "45": "广西壮族自治区", "46": "海南省",
    "50": "重庆市", "51": "四川省", "52": "贵州省", "53": "云南省", "54": "西藏自治区",
    "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区", "65": "新疆维吾尔自治区",
    "71": "台湾省", "81": "香港特别行政区", "82": "澳门特别行政区",
})

# GB/T 2260: a selection of prefecture-level units (6-digit codes ending in 00). For the four
# municipalities the code is that of the 市辖区 unit (e.g. 110100). Used by the synthetic data and tests;
# not a complete list.
CITIES: Mapping[str, str] = _frozen({
    "110100": "北京市", "120100": "天津市", "310100": "上海市", "500100": "重庆市",
    "440100": "广州市", "440300": "深圳市", "330100": "杭州市", "320100": "南京市",
    "510100": "成都市", "420100": "武汉市", "610100": "西安市", "370100": "济南市",
})

# GB/T 2260: county-level districts inside the cities above (a selection, not complete).
DISTRICTS: Mapping[str, str] = _frozen({
    "110101": "东城区", "110102": "西城区", "110105": "朝阳区", "110106": "丰台区", "110108": "海淀区",
    "120101": "和平区", "120102": "河东区", "120103": "河西区",
    "310101": "黄浦区", "310104": "徐汇区", "310105": "长宁区", "310115": "浦东新区",
    "500103": "渝中区",
    "440103": "荔湾区", "440104": "越秀区", "440106": "天河区",
    "440303": "罗湖区", "440304": "福田区", "440305": "南山区",
    "330102": "上城区", "330106": "西湖区",
    "320102": "玄武区", "320104": "秦淮区",
    "510104": "锦江区", "510105": "青羊区",
    "420102": "江岸区", "420106": "武昌区",
    "610102": "新城区", "610113": "雁塔区",
    "370102": "历下区",
})

# ISO 3166-1 alpha-3 codes commonly met in MRZs, plus the ICAO Doc 9303 Part 3 §5 exceptions:
# "D" (Germany, written D<< in the MRZ), "UTO" (Utopia, the ICAO specimen state), the British
# nationality codes GBD/GBN/GBO/GBP/GBS, "EUE" (European Union), the United Nations codes UNO/UNA/UNK,
# and XXA/XXB/XXC/XXX (stateless, refugee, unspecified nationality).
MRZ_STATES: Mapping[str, str] = _frozen({
    "AFG": "Afghanistan", "ALB": "Albania", "DZA": "Algeria", "ARG": "Argentina", "ARM": "Armenia",
    "AUS": "Australia", "AUT": "Austria", "AZE": "Azerbaijan", "BGD": "Bangladesh", "BLR": "Belarus",
    "BEL": "Belgium", "BRA": "Brazil", "BGR": "Bulgaria", "KHM": "Cambodia", "CAN": "Canada",
    "CHL": "Chile", "CHN": "China", "COL": "Colombia", "HRV": "Croatia", "CUB": "Cuba",
    "CYP": "Cyprus", "CZE": "Czechia", "DNK": "Denmark", "EGY": "Egypt", "EST": "Estonia",
    "ETH": "Ethiopia", "FIN": "Finland", "FRA": "France", "GEO": "Georgia", "DEU": "Germany",
    "GRC": "Greece", "HKG": "Hong Kong", "HUN": "Hungary", "ISL": "Iceland", "IND": "India",
    "IDN": "Indonesia", "IRN": "Iran", "IRQ": "Iraq", "IRL": "Ireland", "ISR": "Israel",
    "ITA": "Italy", "JPN": "Japan", "JOR": "Jordan", "KAZ": "Kazakhstan", "KEN": "Kenya",
    "KOR": "Korea, Republic of", "PRK": "Korea, Democratic People's Republic of", "KGZ": "Kyrgyzstan",
    "LAO": "Lao People's Democratic Republic", "LVA": "Latvia", "LBN": "Lebanon", "LTU": "Lithuania",
    "LUX": "Luxembourg", "MAC": "Macao", "MYS": "Malaysia", "MLT": "Malta", "MEX": "Mexico",
    "MNG": "Mongolia", "MAR": "Morocco", "MMR": "Myanmar", "NPL": "Nepal", "NLD": "Netherlands",
    "NZL": "New Zealand", "NGA": "Nigeria", "NOR": "Norway", "PAK": "Pakistan", "PER": "Peru",
    "PHL": "Philippines", "POL": "Poland", "PRT": "Portugal", "QAT": "Qatar", "ROU": "Romania",
    "RUS": "Russian Federation", "SAU": "Saudi Arabia", "SRB": "Serbia", "SGP": "Singapore",
    "SVK": "Slovakia", "SVN": "Slovenia", "ZAF": "South Africa", "ESP": "Spain", "LKA": "Sri Lanka",
    "SWE": "Sweden", "CHE": "Switzerland", "TWN": "Taiwan", "TJK": "Tajikistan", "THA": "Thailand",
    "TUR": "Türkiye", "TKM": "Turkmenistan", "UKR": "Ukraine", "ARE": "United Arab Emirates",
    "GBR": "United Kingdom", "USA": "United States", "URY": "Uruguay", "UZB": "Uzbekistan",
    "VEN": "Venezuela", "VNM": "Viet Nam",
    # ICAO Doc 9303 Part 3 §5 exceptions and reserved codes
    "D": "Germany (ICAO MRZ code)",
    "UTO": "Utopia (ICAO specimen state)",
    "EUE": "European Union",
    "GBD": "British Overseas Territories Citizen",
    "GBN": "British National (Overseas)",
    "GBO": "British Overseas Citizen",
    "GBP": "British Protected Person",
    "GBS": "British Subject",
    "UNO": "United Nations Organization or its officials",
    "UNA": "United Nations specialized agency or its officials",
    "UNK": "Resident of Kosovo (UNMIK)",
    "XXA": "Stateless person",
    "XXB": "Refugee (1951 Convention)",
    "XXC": "Refugee (other than 1951 Convention)",
    "XXX": "Unspecified nationality",
})

CODE_LISTS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "gender": GENDER,
    "ethnicity": ETHNICITY,
    "province": PROVINCES,
    "city": CITIES,
    "district": DISTRICTS,
    "country": MRZ_STATES,
})


def code_list(name: str) -> Mapping[str, str]:
    """The code list called ``name`` (one of :data:`CODE_LISTS`).

    Raises :class:`~cardkit.errors.ProfileError` naming the known lists if there is none.
    """
    try:
        return CODE_LISTS[name]
    except KeyError:
        known = ", ".join(sorted(CODE_LISTS))
        raise ProfileError(f"unknown code list {name!r} (known: {known})") from None
